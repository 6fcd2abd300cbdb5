"""Routing: softmax / sigmoid scoring, selection-only bias, renormalisation (exact values)."""

from __future__ import annotations

import math

import pytest
import torch

from copyhunt_moe.errors import MoEConfigError
from copyhunt_moe.routing import route


def test_softmax_top2_renormalised() -> None:
    # softmax(log [1, 2, 3, 4]) = [0.1, 0.2, 0.3, 0.4]; top-2 = experts 3 (0.4) and 2 (0.3);
    # renormalised: 0.4 / 0.7 and 0.3 / 0.7.
    logits = torch.tensor([[math.log(1), math.log(2), math.log(3), math.log(4)]], dtype=torch.float64)
    weights, ids = route(logits, 2, scoring="softmax")
    assert ids.dtype == torch.int64 and weights.dtype == torch.float32
    assert ids.tolist() == [[3, 2]]
    assert weights.tolist()[0] == pytest.approx([0.4 / 0.7, 0.3 / 0.7], abs=1e-7)


def test_softmax_without_renormalisation_keeps_probabilities() -> None:
    logits = torch.tensor([[math.log(1), math.log(2), math.log(3), math.log(4)]], dtype=torch.float32)
    weights, ids = route(logits, 2, scoring="softmax", renormalize=False)
    assert ids.tolist() == [[3, 2]]
    assert weights.tolist()[0] == pytest.approx([0.4, 0.3], abs=1e-6)


def test_sigmoid_bias_changes_choice_not_weights() -> None:
    # scores = sigmoid([2, 1, 0, -1]) = [0.8808, 0.7311, 0.5, 0.2689].
    # With bias [0, 0, 0, 5] the choice is expert 3 (0.2689 + 5) then expert 0 (0.8808);
    # the weights come from the UNBIASED scores: 0.2689 / (0.2689 + 0.8808), 0.8808 / (...).
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0])
    weights, ids = route(logits, 2, scoring="sigmoid", bias=bias)
    s0, s3 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    assert ids.tolist() == [[3, 0]]
    assert weights.tolist()[0] == pytest.approx([s3 / (s0 + s3), s0 / (s0 + s3)], abs=1e-6)
    # Without the bias the two best unbiased scores win: experts 0 and 1.
    _, ids_nobias = route(logits, 2, scoring="sigmoid")
    assert ids_nobias.tolist() == [[0, 1]]


def test_bf16_logits_give_float32_weights_summing_to_one() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 8, generator=gen).to(torch.bfloat16)
    weights, ids = route(logits, 3, scoring="sigmoid", bias=torch.zeros(8))
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(16), atol=1e-2, rtol=0)
    # Each row picks 3 distinct experts.
    assert all(len(set(row)) == 3 for row in ids.tolist())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(top_k=0), "top_k must be in 1..4"),
        (dict(top_k=5), "top_k must be in 1..4"),
        (dict(top_k=2, scoring="relu"), "scoring must be one of"),
        (dict(top_k=2, bias=torch.zeros(3)), r"routing bias must have shape \(4,\)"),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs: dict, message: str) -> None:
    top_k = kwargs.pop("top_k")
    with pytest.raises(MoEConfigError, match=message):
        route(torch.zeros(2, 4), top_k, **kwargs)


def test_logits_must_be_2d() -> None:
    with pytest.raises(MoEConfigError, match="must be 2-D"):
        route(torch.zeros(4), 1)
