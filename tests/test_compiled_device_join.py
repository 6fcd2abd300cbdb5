"""The device join of compiled copies (``capture/compiled/device_join.py``) on a hand-made Kineto trace.

The trace has the shape torch 2.11 writes (see ``copyhunt/kineto/trace.py``): one compiled execution inside its
``copyhunt#7`` range, launching a Triton copy kernel, a fused computing kernel and an extern ``aten::index_put_``
whose copy kernel the eager join lists as an unexplained device copy (origin "device").
"""

from __future__ import annotations

from copyhunt.capture.compiled import join_compiled
from copyhunt.kineto import parse
from copyhunt.records import CompiledCopy, CompiledHunt, Copy, CopyRecord, DeviceTiming, Frame, Trace, TraceMeta
from factories import record, trace, with_copies

SITE = Frame("model.py", 10, "forward")


def _x(cat: str, name: str, ts: float, dur: float, tid: int = 1, **args: object) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def _kineto() -> object:
    events = [
        _x("cpu_op", "copyhunt#7", 0, 100),
        _x("cuda_runtime", "cudaLaunchKernel", 10, 2, correlation=1),
        _x("kernel", "triton_poi_fused_clone_0", 200, 4.0, tid=7, correlation=1, stream=7),
        _x("cuda_runtime", "cudaLaunchKernel", 20, 2, correlation=2),
        _x("kernel", "triton_poi_fused_cat_mul_1", 210, 6.0, tid=7, correlation=2, stream=7),
        _x("cpu_op", "aten::index_put_", 30, 20),
        _x("cpu_op", "aten::_index_put_impl_", 31, 18),  # the extern launches from inside its inner op
        _x("cuda_runtime", "cudaLaunchKernel", 35, 2, correlation=3),
        _x("kernel", "void at::native::index_put_kernel_impl<float>(...)", 220, 3.0, tid=7, correlation=3, stream=7),
        # Another execution's range: its kernel must not join the first execution's records.
        _x("cpu_op", "copyhunt#20", 300, 50),
        _x("cuda_runtime", "cudaLaunchKernel", 310, 2, correlation=4),
        _x("kernel", "triton_poi_fused_clone_0", 400, 5.0, tid=7, correlation=4, stream=7),
    ]
    return parse({"traceEvents": events})


def _compiled(seq: int, call: int, node: str, how: str, kernels: list[str], nbytes: int, graph_op: str) -> CopyRecord:
    return record(
        seq, nbytes, op=graph_op, src_device="cuda:0", dst_device="cuda:0", shape=(), site=SITE, origin="compiled",
        compiled=CompiledCopy(graph=0, node=node, graph_op=graph_op, how=how, call=call, kernels=tuple(kernels)),
    )


def _trace() -> Trace:
    copies = (
        _compiled(8, 7, "clone", "kernel", ["triton_poi_fused_clone_0"], 1024, "aten.clone.default"),
        _compiled(9, 7, "cat", "fused", ["triton_poi_fused_cat_mul_1"], 2048, "aten.cat.default"),
        _compiled(10, 7, "index_put_", "extern", ["aten.index_put_"], 64, "aten.index_put_.default"),
        _compiled(21, 20, "clone", "kernel", ["triton_poi_fused_clone_0"], 1024, "aten.clone.default"),
        # What device.join made of the extern's copy kernel inside execution 7: dropped, not double counted.
        record(7, 0, op="compiled graph 0", src_device="cuda:0", dst_device="cuda:0", shape=(), dtype="", site=SITE,
               origin="device"),
    )
    # The eager join timed that device record (position 4).
    return Trace(meta=TraceMeta(compiled=CompiledHunt(mode="compiled")), copies=copies,
                 timings={4: DeviceTiming("index_put_kernel", 3.0)})


def _by_seq(t: Trace) -> dict[int, Copy]:
    return {c.seq: c for c in t.read_copies()}


def test_kernels_join_the_copies_of_their_own_execution() -> None:
    out = join_compiled(_trace(), _kineto())
    by = _by_seq(out)
    assert by[8].device == DeviceTiming("triton_poi_fused_clone_0", 4.0, bytes=1024, stream=7, start_us=200.0)
    assert by[21].device == DeviceTiming("triton_poi_fused_clone_0", 5.0, bytes=1024, stream=7, start_us=400.0)
    # The extern call's kernel, found through the aten op around its launch.
    assert by[10].device is not None and by[10].device.time_us == 3.0
    # A computing kernel is no copy pass: its time stays beside the record, not as copy time.
    assert by[9].device is None and by[9].compiled.kernel_us == 6.0
    assert 7 not in by  # the eager join's "device" record of the extern copy kernel
    assert out.meta.compiled.device_events_joined == 4


def test_a_kernel_shared_by_two_copies_is_split_by_bytes() -> None:
    t = _trace()
    shared = _compiled(11, 7, "clone_1", "kernel", ["triton_poi_fused_clone_0"], 3072, "aten.clone.default")
    out = join_compiled(with_copies(t, (*t.copies, shared)), _kineto())
    by = _by_seq(out)
    # 4.0 us split 1024 : 3072 bytes.
    assert (by[8].device.time_us, by[11].device.time_us) == (1.0, 3.0)


def test_nothing_compiled_leaves_the_trace_alone() -> None:
    t = trace(_trace().copies[-1])
    assert join_compiled(t, _kineto()) is t


def test_timings_follow_their_copies_past_the_dropped_device_records() -> None:
    # Timings are keyed by position: the eager join's record of the extern copy kernel comes first
    # here, so dropping it moves every later copy (and its timing) one position up.
    t = _trace()
    dropped, compiled = t.copies[-1], t.copies[:-1]
    eager = record(30, 8, site=SITE, src_device="cuda:0", dst_device="cuda:0")
    memcpy = DeviceTiming("Memcpy DtoD (Device -> Device)", 1.5, 8)
    out = join_compiled(
        Trace(meta=t.meta, copies=(dropped, eager, *compiled), timings={0: DeviceTiming("index_put_kernel", 3.0), 1: memcpy}),
        _kineto(),
    )
    assert [c.seq for c in out.copies] == [30, 8, 9, 10, 21]
    assert out.timings[0] == memcpy
    assert out.timings[1] == DeviceTiming("triton_poi_fused_clone_0", 4.0, bytes=1024, stream=7, start_us=200.0)
    assert sorted(out.timings) == [0, 1, 3, 4]  # the fused copy (position 2) has no copy time
