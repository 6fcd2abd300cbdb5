"""The op tables the verdict rules suggest changes from, checked against torch itself (issue 11).

A rule may only suggest "let the producer write the destination" when torch accepts that destination:
these tests call every op of ``CAST_ON_WRITE_OPS`` with an ``out=`` of another dtype (it must work), and
the pointwise ops left out of it (it must raise), so a torch that changes its rules fails here.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from copyhunt.analysis.op_facts import CAST_ON_WRITE_OPS, POINTWISE_OPS, can_cast, write_obstacle
from copyhunt.analysis.wording import ITEMSIZE


def _call_with_out(name: str, x: torch.Tensor, out: torch.Tensor) -> None:
    fn = getattr(torch, name)
    try:
        fn(x, out=out)  # unary
    except TypeError:
        fn(x, x, out=out)  # binary


@pytest.mark.parametrize("name", sorted(CAST_ON_WRITE_OPS))
def test_every_cast_on_write_op_writes_a_wider_dtype(name: str) -> None:
    # float32 inputs in (0.1, 1.1) (defined for log, asin...), int64 for the bitwise ops; out= float64
    # (or float32 from int64): a cast torch.can_cast allows.
    if name.startswith("bitwise"):
        x, out = torch.arange(1, 6), torch.empty(5, dtype=torch.float32)
    else:
        x, out = torch.rand(5) * 0.8 + 0.1, torch.empty(5, dtype=torch.float64)
    _call_with_out(name, x, out)


@pytest.mark.parametrize("name", ["neg", "abs", "floor", "ceil", "round", "sign", "trunc", "frac", "sgn"])
def test_pointwise_ops_left_out_keep_their_dtype(name: str) -> None:
    assert name in POINTWISE_OPS or name in ("trunc", "frac", "sgn")
    assert name not in CAST_ON_WRITE_OPS
    with pytest.raises(RuntimeError, match="Found dtype Double but expected Float"):
        _call_with_out(name, torch.rand(5), torch.empty(5, dtype=torch.float64))


def test_where_keeps_its_dtype() -> None:
    assert "where" in POINTWISE_OPS and "where" not in CAST_ON_WRITE_OPS
    x = torch.rand(5)
    with pytest.raises(RuntimeError, match="Expected out type to be Float but got Double"):
        torch.where(x > 0.5, x, x, out=torch.empty(5, dtype=torch.float64))


def test_can_cast_agrees_with_torch_for_every_dtype_pair() -> None:
    names = [n for n in ITEMSIZE if hasattr(torch, n.replace("torch.", ""))]
    for a, b in itertools.product(names, repeat=2):
        ta, tb = getattr(torch, a.replace("torch.", "")), getattr(torch, b.replace("torch.", ""))
        assert can_cast(a, b) == torch.can_cast(ta, tb), (a, b)


def test_the_obstacles_the_issue_found_are_real() -> None:
    # T5's buckets: a float product cast to int64. torch.mul(..., out=int64) raises.
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        torch.mul(torch.rand(3), 2.5, out=torch.empty(3, dtype=torch.long))
    assert write_obstacle("aten.mul.Tensor", False, "torch.float32", "torch.int64", True) == (
        "aten.mul.Tensor cannot write int64 itself: out= does not cast float32 to int64",
        "this copy is how the value becomes int64",
    )
    # grouped_mm experts: sort of int64 ids, then .float(). sort's out= values must be int64.
    with pytest.raises(RuntimeError, match="Expected out tensor to have dtype long int, but got float instead"):
        torch.sort(torch.tensor([3, 1, 2]), out=(torch.empty(3), torch.empty(3, dtype=torch.long)))
    assert write_obstacle("aten.sort.default", False, "torch.int64", "torch.float32", True) == (
        "aten.sort cannot write float32 itself: its out= must be int64, its result dtype",
        "this copy is how the value becomes float32",
    )
    # A comparison cast to int64 can be written: torch.gt(x, 0, out=int64).
    torch.gt(torch.rand(3), 0.5, out=torch.empty(3, dtype=torch.long))
    assert write_obstacle("aten.gt.Scalar", False, "torch.bool", "torch.int64", True) is None
    # A copy producer writes anything (one copy instead of two); whether a matmul's out= writes a strided
    # layout without copying depends on its kernel (CPU BLAS takes some strides, not all): not proven.
    assert write_obstacle("aten._to_copy.default", True, "torch.float32", "torch.bfloat16", False) is None
    assert write_obstacle("aten.bmm.default", False, "torch.float32", "torch.float32", False) == (
        "aten.bmm is not elementwise: whether its out= writes this copy's layout without a copy of its own "
        "depends on its kernel, which the trace cannot see",
        "this copy is how the value gets its layout, unless the producer's kernel writes that layout itself",
    )


def test_a_cat_producer_writes_a_wider_dtype_only() -> None:
    a = torch.rand(4)
    torch.cat([a, a], out=torch.empty(8, dtype=torch.float64))
    assert write_obstacle("aten.cat.default", True, "torch.float32", "torch.float64", True) is None
    with pytest.raises(TypeError, match="input types can.t be cast to the desired output type Long"):
        torch.cat([a, a], out=torch.empty(8, dtype=torch.long))
    assert write_obstacle("aten.cat.default", True, "torch.float32", "torch.int64", True) == (
        "aten.cat cannot write int64 itself: out= does not cast float32 to int64",
        "this copy is how the value becomes int64",
    )
