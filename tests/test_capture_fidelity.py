"""Capture fidelity: a hunt runs the kernels the untraced program runs, in every grad mode.

Under ``torch.inference_mode()`` (and on inference tensors outside it) composite ops reach the dispatch
mode undecomposed. The hunt must run their C++ composite kernels, as the untraced program does; torch's
Python decompositions differ (eval dropout clones instead of returning its input; one_hot becomes
``eq + _to_copy`` instead of ``zeros + scatter_``), which recorded phantom copies and changed results.
"""

from __future__ import annotations

import inspect
import runpy
import textwrap
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from copyhunt.capture import copy_ops
from copyhunt.cli import main
from copyhunt.capture.dispatch import _COMPOSITE, classify
from copyhunt.hunting import hunt

aten = torch.ops.aten
MODES = ("normal", "no_grad", "inference_mode", "inference_tensors")


def here() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def _inputs(mode: str, make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    if mode == "inference_tensors":
        with torch.inference_mode():
            t = make()
        assert all(v.is_inference() for v in t.values())
        return t
    return make()


def _ctx(mode: str) -> Any:
    return {"normal": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(
        mode, torch.enable_grad
    )()


def _record(mode: str, make: Callable[[], dict[str, torch.Tensor]], fn: Callable[..., Any]) -> tuple[Any, ...]:
    """(op names, copies as (op, kind, bytes, line, noop)) of ``fn(**inputs)`` traced in ``mode``."""
    t = _inputs(mode, make)
    with _ctx(mode), hunt() as h:
        fn(**t)
    ops = tuple(o.op for o in h.trace.ops)
    copies = tuple((c.op, c.kind, c.bytes, c.site.line if c.site else None, c.noop) for c in h.copies)
    return ops, copies


# Each case: inputs, the program, and the copies every mode must record (op, bytes).
CASES: dict[str, tuple[Callable[[], dict[str, torch.Tensor]], Callable[..., Any], list[tuple[str, int]]]] = {
    # eval dropout returns its input: no copy
    "dropout_eval": (lambda: {"x": torch.randn(4, 8)}, lambda x: F.dropout(x, 0.1, training=False), []),
    # one_hot is zeros + scatter_: no copy (its Python decomposition made an int64 _to_copy)
    "one_hot": (lambda: {"i": torch.tensor([0, 2, 1])}, lambda i: F.one_hot(i, 3), []),
    # 3-D @ 2-D: view + mm + _unsafe_view, no copy
    "matmul": (lambda: {"a": torch.randn(2, 3, 4), "b": torch.randn(4, 5)}, lambda a, b: a @ b, []),
    # transposed 3-D @ 2-D: matmul does not fold it (that would copy) but runs an expanded bmm: no copy
    "matmul_t": (lambda: {"a": torch.randn(2, 4, 3), "b": torch.randn(4, 5)}, lambda a, b: a.transpose(1, 2) @ b, []),
    "linear": (
        lambda: {"a": torch.randn(2, 3, 4), "w": torch.randn(5, 4), "b": torch.randn(5)},
        lambda a, w, b: F.linear(a, w, b),
        [],
    ),
    "layer_norm": (
        lambda: {"a": torch.randn(2, 3, 8), "w": torch.randn(8), "b": torch.randn(8)},
        lambda a, w, b: F.layer_norm(a, (8,), w, b),
        [],
    ),
    "embedding": (lambda: {"i": torch.tensor([[1, 3]]), "w": torch.randn(5, 4)}, lambda i, w: F.embedding(i, w), []),
    "sdpa": (
        lambda: {"q": torch.randn(1, 2, 3, 4), "k": torch.randn(1, 2, 3, 4), "v": torch.randn(1, 2, 3, 4)},
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        [],
    ),
    # may-alias ops: copies only when they must move data (a 4 x 6 float32 = 96 B; float64 = 192 B)
    "may_alias": (
        lambda: {"x": torch.randn(4, 6)},
        lambda x: (x.contiguous(), x.to(torch.float32), x.reshape(-1), x.t().contiguous(), x.to(torch.float64), x.t().reshape(-1)),
        [("aten.clone.default", 96), ("aten._to_copy.default", 192), ("aten.clone.default", 96)],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_records_are_identical_in_every_grad_mode(case: str) -> None:
    make, fn, want = CASES[case]
    ref = _record("normal", make, fn)
    assert [(op, nb) for op, _, nb, _, _ in ref[1]] == want
    for mode in MODES[1:]:
        assert _record(mode, make, fn) == ref, mode


@pytest.mark.parametrize("mode", MODES)
def test_eval_dropout_aliases_its_input_traced_and_untraced(mode: str) -> None:
    t = _inputs(mode, lambda: {"x": torch.randn(4, 8)})
    x = t["x"]
    with _ctx(mode):
        untraced = F.dropout(x, 0.1, training=False)
        with hunt() as h:
            traced = F.dropout(x, 0.1, training=False)
            module = torch.nn.Dropout(0.5).eval()(x)
    assert untraced.data_ptr() == x.data_ptr()
    assert traced.data_ptr() == x.data_ptr() and module.data_ptr() == x.data_ptr()
    assert h.copies == ()


MUTATE_AFTER_ALIAS = """
import torch, torch.nn.functional as F
x = torch.ones(4)
with torch.inference_mode():
    y = F.dropout(x, 0.1, training=False)
    x.add_(1)
print(y.tolist())
"""


def test_mutate_after_alias_prints_the_same_traced_and_untraced(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The program: eval dropout returns x itself, so y sees the add_: [2.0, ...] both ways.
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(MUTATE_AFTER_ALIAS))
    runpy.run_path(str(script), run_name="__main__")
    untraced = capsys.readouterr().out
    assert main(["trace", str(script), "-o", str(tmp_path / "t.json")]) == 0
    traced = capsys.readouterr().out
    assert untraced == "[2.0, 2.0, 2.0, 2.0]\n"
    assert traced.startswith(untraced)


def test_mutate_after_alias_in_process() -> None:
    x = torch.ones(4)
    with torch.inference_mode(), hunt() as h:
        y = F.dropout(x, 0.1, training=False)
        x.add_(1)
    assert y.tolist() == [2.0, 2.0, 2.0, 2.0] and h.copies == ()


def test_composite_sub_ops_are_attributed_to_the_calling_line() -> None:
    x = torch.randn(4, 6)
    with torch.inference_mode(), hunt() as h:
        ln = here(); x.t().reshape(-1)  # fmt: skip
    (c,) = h.copies
    assert (c.op, c.bytes, c.site.line, c.site.function) == ("aten.clone.default", 96, ln, "test_composite_sub_ops_are_attributed_to_the_calling_line")


def test_registry_holds_only_ops_that_reach_the_mode() -> None:
    # A composite op never reaches the recorder (its kernel runs and the mode sees what it calls),
    # so registering one would be dead code: contiguous / reshape / to / concat are not in it.
    composite = [str(op) for op in copy_ops.COPY_OPS if classify(op) is _COMPOSITE]
    assert composite == []
    for name in ("contiguous", "reshape", "to", "concat", "concatenate"):
        assert not [op for op in copy_ops.COPY_OPS if op.name().split("::")[1].split(".")[0] == name], name


def test_item_on_the_cpu_is_not_a_copy_and_on_a_device_is_a_d2h() -> None:
    x = torch.tensor([3.0, 4.0])
    with hunt() as h:
        x[0].item()
        bool(x[1])
    assert h.copies == ()
    assert "aten._local_scalar_dense.default" in [o.op for o in h.trace.ops]
    # On a device the same op reads one element back to the host (what the GPU test checks end to end).
    fn = copy_ops.COPY_OPS[aten._local_scalar_dense.default]
    facts = fn((torch.empty((), dtype=torch.bfloat16, device="meta"),), {}, 1.0)
    assert facts is not None and (facts.nbytes, facts.dst.device.type, facts.dst.dtype, facts.to_host_value) == (
        2,
        "cpu",
        torch.bfloat16,
        True,
    )
    assert fn((torch.tensor(1.0),), {}, 1.0) is None


def test_tensor_constructors_move_data_where_the_mode_sees_it() -> None:
    # torch.tensor(data, device=...) copies host data to the device with every mode off, unless
    # only_lift_cpu_tensors is set: the hunt sets it (then the move is a _to_copy at the caller's
    # line, checked on the GPU in test_device_gpu.py) and restores it after.
    before = torch._C._only_lift_cpu_tensors()
    with hunt() as h:
        during = torch._C._only_lift_cpu_tensors()
        t = torch.tensor([1.0, 2.0])  # on the CPU nothing moves: no copy either way
    assert (before, during, torch._C._only_lift_cpu_tensors()) == (False, True, False)
    assert t.tolist() == [1.0, 2.0] and h.copies == ()
    assert [o.op for o in h.trace.ops] == ["aten.lift_fresh.default"]


@pytest.mark.parametrize("mode", ["normal", "inference_mode"])
def test_composite_with_its_own_cpu_kernel_runs_that_kernel(mode: str) -> None:
    # native_channel_shuffle has a CompositeImplicitAutograd kernel AND a CPU kernel: dispatching it on
    # a CPU tensor runs the CPU kernel, so the hunt records the op itself, in every mode.
    assert classify(aten.native_channel_shuffle.default) is None
    x = torch.arange(16.0).reshape(1, 4, 2, 2)
    with _ctx(mode), hunt() as h:
        y = F.native_channel_shuffle(x, 2)
    assert [o.op for o in h.trace.ops] == ["aten.native_channel_shuffle.default"]
    assert y[0, :, 0, 0].tolist() == [0.0, 8.0, 4.0, 12.0]
