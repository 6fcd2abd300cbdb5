"""Device copies torch.compile makes while it compiles (issue 14: "no source site" copies in a compiled Llama).

On an H200, ``benchmarks/gpu_compile.py --part llama`` gave 12 ``aten::_local_scalar_dense`` d2h memcpys
of 2 bytes with no source line: 8 inside the first call of the compiled forward (graph 2 compiled) and 4
inside the second (graph 3), none in the 6 later executions. Inductor reads the values of 0-d and
folded constants with ``.item()`` while it compiles, with every dispatch mode off, inside Dynamo's
``... (dynamo_timed)`` profiler ranges. The device join now attributes such a copy to the line that
called the compiled function (the compiled execution that follows the compile on that thread).

The first test checks the torch fact on the CPU (a real compile under the profiler); the others run the
join on a hand-made Kineto trace with that shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from copyhunt import kineto
from copyhunt.capture import device
from copyhunt.capture.compiled import join_compiled
from copyhunt.records import CompiledHunt, Frame, OpRecord, Trace, TraceMeta

CALLER = Frame("generate.py", 104, "go")


def test_inductor_reads_constants_inside_the_compile_ranges(tmp_path: Path) -> None:
    # A 0-d bf16 constant made in the compiled code: Inductor turns it into a Python number (.item()).
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor(0.5, dtype=torch.bfloat16) + 1

    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    fn = torch.compile(f)
    x = torch.randn(8, dtype=torch.bfloat16)
    # Caches off, as in a hunt (hooks.py): a cache hit skips the lowering that reads the constant.
    with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False), \
            torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn(x)
    torch._dynamo.reset()
    assert torch.equal(out, f(x))
    prof.export_chrome_trace(str(tmp_path / "t.json"))
    kt = kineto.parse(json.loads((tmp_path / "t.json").read_text()))
    items = [e for e in kt.cpu_ops if e.name == "aten::_local_scalar_dense"]
    assert items, "Inductor read no constant while compiling (the premise of the compile-time join changed)"
    ct = device._CompileTime(kt, {})
    ends = [ct.compile_end(e) for e in items]
    assert all(end is not None and end >= e.end for e, end in zip(items, ends))


def _x(cat: str, name: str, ts: float, dur: float, tid: int = 1, **args: object) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def _memcpy(ts: float, corr: int) -> list[dict]:
    """An ``aten::_local_scalar_dense`` at ``ts`` copying one bf16 scalar to the host."""
    return [
        _x("cpu_op", "aten::_local_scalar_dense", ts, 10),
        _x("cuda_runtime", "cudaMemcpyAsync", ts + 2, 3, correlation=corr),
        _x("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", ts + 100, 1.0, tid=7, correlation=corr, stream=7, bytes=2),
    ]


def _kineto(extra: list[dict] | None = None) -> kineto.KinetoTrace:
    events = [
        # The first call compiles: Dynamo's ranges, two constant reads inside (one in the lowering).
        _x("cpu_op", "_compile.compile_inner (dynamo_timed)", 0, 1000),
        _x("cpu_op", "GraphLowering.run (dynamo_timed)", 100, 500),
        *_memcpy(200, 1),
        *_memcpy(700, 2),
        # Then the compiled graph runs (copyhunt#52: its execution), and its outputs op.
        _x("cpu_op", "copyhunt#52", 1100, 50),
        _x("cpu_op", "copyhunt#53", 1160, 5),
        # A later execution, no compile: the copies above belong to the call at 1100, not to this one.
        _x("cpu_op", "copyhunt#60", 2000, 50),
        *(extra or []),
    ]
    return kineto.parse({"traceEvents": events})


def _trace() -> Trace:
    other = Frame("other.py", 7, "step")
    ops = (
        OpRecord(seq=52, op="compiled graph 2", site=CALLER, module="model", thread=11),
        OpRecord(seq=53, op="compiled graph 2 (outputs)", site=CALLER, thread=11),
        OpRecord(seq=60, op="compiled graph 2", site=other, thread=11),
    )
    return Trace(meta=TraceMeta(compiled=CompiledHunt(mode="compiled")), ops=ops)


def test_a_copy_made_while_compiling_gets_the_compiled_call_line() -> None:
    j = device.join_kineto(_trace(), _kineto())
    copies = j.read_copies()
    assert [(c.origin, c.seq, c.op, c.kind, c.bytes, c.site, c.module) for c in copies] == [
        ("device", -1, "aten::_local_scalar_dense", "d2h", 2, CALLER, "model"),
    ] * 2
    assert [c.device.start_us for c in copies] == [300.0, 800.0]
    notes = " ".join(j.meta.notes)
    assert "2 device copy(ies) made by torch.compile while it compiled (at compile time" in notes
    assert notes.count("2 attributed to the line that called the compiled function") == 1
    assert "no compiled execution followed" not in notes
    assert "outside every op" not in notes
    assert j.meta.device_join["no_site"] == 0
    # The compiled join keeps them (they are no copy of an execution).
    assert len(join_compiled(j, _kineto()).copies) == 2


def test_a_copy_outside_compiles_and_ops_still_has_no_line() -> None:
    j = device.join_kineto(_trace(), _kineto(_memcpy(3000, 9)))
    last = j.read_copies()[-1]
    assert (last.seq, last.site, last.op) == (-1, None, "aten::_local_scalar_dense")
    notes = " ".join(j.meta.notes)
    assert "1 device copy(ies) launched outside every op the hunt saw" in notes
    assert "2 device copy(ies) made by torch.compile" in notes
    assert j.meta.device_join["no_site"] == 1


def test_a_compile_with_no_execution_after_it_keeps_no_line() -> None:
    # The compile failed or the hunt ended first: no compiled run follows on that thread.
    kt = _kineto()
    j = device.join_kineto(Trace(ops=()), kt)
    assert [c.site for c in j.read_copies()] == [None, None]
    notes = " ".join(j.meta.notes)
    assert "2 with no source line (no compiled execution followed the compile)" in notes
    assert "attributed to the line" not in notes
