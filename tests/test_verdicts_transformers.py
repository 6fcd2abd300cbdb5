"""Issue 11's root causes inside the installed transformers models (tiny random configs, never downloaded).

``tests/test_verdicts_patterns.py`` checks each pattern on its own; here the same lines are judged where
transformers 5.24 runs them: Llama ``generate()`` with eager attention (``repeat_kv``, ``rotate_half``, the rotary
``cat((freqs, freqs))``, ``DynamicLayer.update``), Qwen3-MoE with the grouped_mm experts (``sort`` then
``.float()``), and T5's relative-position buckets. Lines are found by their source text at test time.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import transformers  # noqa: E402

import copyhunt  # noqa: E402
from copyhunt.analysis import judge  # noqa: E402
from copyhunt.records import Copy, Trace  # noqa: E402
from copyhunt.view import view  # noqa: E402

from test_real_models import LLAMA, _where  # noqa: E402 - tests/ is on sys.path

pytestmark = pytest.mark.skipif(transformers.__version__ != "5.24.0", reason="lines checked on transformers 5.24.0")


def _hunt(run: Any) -> Trace:
    torch.manual_seed(0)
    with torch.inference_mode(), copyhunt.hunt() as h:
        keep = run()
    del keep
    return judge(h.trace)


@pytest.fixture(scope="module")
def llama_eager() -> Trace:
    """Llama generate() (dynamic cache) with eager attention: 6 prompt tokens + 4 new, 2 layers, 2 kv heads of 4."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**LLAMA)
    cfg._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(3, 256, (1, 6))
    return _hunt(lambda: model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False))


@pytest.fixture(scope="module")
def qwen3_grouped_mm() -> Trace:
    """One Qwen3-MoE forward of 2 x 7 tokens through the grouped_mm experts."""
    torch.manual_seed(0)
    cfg = transformers.Qwen3MoeConfig(**LLAMA, moe_intermediate_size=64, head_dim=16, num_experts=8, num_experts_per_tok=2)
    cfg._experts_implementation = "grouped_mm"
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    x = torch.randint(3, 256, (2, 7))
    return _hunt(lambda: model(x).logits)


def at(trace: Trace, path: str, snippet: str, op: str) -> list[Copy]:
    file, line = _where(path, snippet)
    return [c for c in view(trace).copies if c.site is not None and (c.site.file, c.site.line, c.op) == (file, line, op)]


def verdicts(copies: list[Copy]) -> dict[str, int]:
    return dict(collections.Counter(c.verdict for c in copies))


LLAMA_MOD = "models.llama.modeling_llama"


def test_repeat_kv_reshape_stays(llama_eager: Trace) -> None:
    # 2 layers x 4 forwards x (K, V): 16 clones made by reshape of expanded heads, none replaceable by a view.
    copies = at(llama_eager, f"{LLAMA_MOD}.repeat_kv", "return hidden_states.reshape(", "aten.clone.default")
    assert verdicts(copies) == {"needed": 16}
    assert {c.reason for c in copies} == {
        "made by reshape: PyTorch copies only when no view of the source has the new shape, so no alias can replace it"
    }


def test_rotate_half_keeps_the_half_that_is_not_a_temporary(llama_eager: Trace) -> None:
    copies = at(llama_eager, f"{LLAMA_MOD}.rotate_half", "return torch.cat((-x2, x1), dim=-1)", "aten.cat.default")
    assert verdicts(copies) == {"needed": 16}
    assert all(c.reason.startswith("only part of it could be avoided: source 1 of 2 (a fresh ") for c in copies)
    assert all(" made by aten.neg at modeling_llama.py:" in c.reason for c in copies)


def test_rotary_cat_of_freqs_twice_stays(llama_eager: Trace) -> None:
    copies = at(llama_eager, f"{LLAMA_MOD}.LlamaRotaryEmbedding.forward", "emb = torch.cat((freqs, freqs), dim=-1)", "aten.cat.default")
    assert verdicts(copies) == {"needed": 4}  # one per forward
    assert all(c.reason.startswith("2 of its sources are the same ") for c in copies)


def test_first_cache_update_is_the_new_keys_themselves(llama_eager: Trace) -> None:
    # The first forward of each layer concatenates the keys to an empty tensor: a copy of a value made for
    # it alone (rotary's add, strided: the add writes the contiguous cache layout itself). Later steps
    # append the new keys to the cache: the old part must still be copied, and the reason says so.
    keys = at(llama_eager, "cache_utils.DynamicLayer.update", "self.keys = torch.cat([self.keys, key_states], dim=-2)", "aten.cat.default")
    assert verdicts(keys) == {"fresh-temporary": 2, "needed": 6}
    first = [c for c in keys if c.verdict == "fresh-temporary"]
    assert all(c.suggestion.startswith("let aten.add.Tensor at modeling_llama.py:") for c in first)
    later = [c for c in keys if c.verdict == "needed"]
    assert all(c.reason.startswith("only part of it could be avoided: source 2 of 2 (a fresh 128 B buffer made by ") for c in later)
    # The values are a transposed view of v_proj's matmul: the cat makes them contiguous, and a matmul does
    # not write that layout itself, so the first value cat stays too.
    values = at(llama_eager, "cache_utils.DynamicLayer.update", "self.values = torch.cat([self.values, value_states], dim=-2)", "aten.cat.default")
    assert verdicts(values) == {"needed": 8}


def test_grouped_mm_sort_then_float_stays(qwen3_grouped_mm: Trace) -> None:
    copies = at(qwen3_grouped_mm, "integrations.moe.grouped_mm_experts_forward",
                'histc_input = expert_ids_g.float() if device.type in ("cpu", "mps")', "aten._to_copy.default")
    assert verdicts(copies) == {"needed": 2}  # one per layer
    assert all(c.reason.endswith("but aten.sort cannot write float32 itself: its out= must be int64, its result dtype") for c in copies)


def test_t5_relative_buckets() -> None:
    bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    ctx = torch.arange(7)[:, None]
    rel = torch.arange(7)[None, :] - ctx  # 7 x 7 int64 relative positions
    trace = _hunt(lambda: bucket(rel, bidirectional=True, num_buckets=32, max_distance=128))
    path = "models.t5.modeling_t5.T5Attention._relative_position_bucket"
    # (relative_position > 0).to(torch.long): torch.gt(..., out=<int64>) works.
    gt = at(trace, path, "relative_buckets += (relative_position > 0).to(torch.long) * num_buckets", "aten._to_copy.default")
    assert verdicts(gt) == {"fresh-temporary": 1}
    # (float expression).to(torch.long): torch.mul(..., out=<int64>) raises.
    cast = at(trace, path, "        ).to(torch.long)", "aten._to_copy.default")
    assert verdicts(cast) == {"needed": 1}
    assert cast[0].reason.endswith("but aten.mul.Tensor cannot write int64 itself: out= does not cast float32 to int64")
