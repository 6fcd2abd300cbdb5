"""Every device copy on a Python line: copies made inside C++ join to the dispatch-level op that launched them.

While a device capture runs, the dispatch mode opens a ``copyhunt#<seq>`` range around EVERY op (not only
copy ops), so a memcpy or copy kernel launched inside ``.item()``'s ``_local_scalar_dense`` or inside a
non-copy aten op (boolean indexing's hidden ``nonzero``) lies inside the range of the op the hunt recorded.

The documents below follow the event layout of the real H200 traces in ``traces/`` (torch 2.11): the
outer ``aten::`` cpu_op of the first dispatch, ``PythonDispatchMode``, the bridge range, the redispatched
cpu_op, its runtime calls (``External id`` + ``correlation``), and the GPU events sharing the correlation.
"""

from __future__ import annotations

from typing import Any

from copyhunt import kineto
from copyhunt.capture import device
from copyhunt.records import CopyRecord, Frame, OpRecord, Trace

TID, GPU_TID = 410, 7


class Doc:
    """A Kineto Chrome trace built event by event, in the layout torch 2.11 exports."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ext = 2000
        self.corr = 400

    def cpu(self, name: str, ts: float, dur: float, tid: int = TID, cat: str = "cpu_op") -> int:
        self.ext += 1
        args = {"External id": self.ext, "Record function id": 0, "Ev Idx": len(self.events)}
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": tid, "tid": tid, "ts": ts, "dur": dur, "args": args})
        return self.ext

    def launch(self, name: str, ts: float, ext: int, tid: int = TID) -> int:
        self.corr += 1
        args = {"External id": ext, "cbid": 41, "correlation": self.corr}
        self.events.append({"ph": "X", "cat": "cuda_runtime", "name": name, "pid": tid, "tid": tid, "ts": ts, "dur": 5.0, "args": args})
        return self.corr

    def memcpy(self, direction: str, ts: float, corr: int, ext: int, nbytes: int) -> None:
        names = {"DtoH": "Memcpy DtoH (Device -> Pageable)", "HtoD": "Memcpy HtoD (Pageable -> Device)"}
        args = {"External id": ext, "device": 0, "context": 1, "stream": 7, "correlation": corr, "bytes": nbytes}
        self.events.append({"ph": "X", "cat": "gpu_memcpy", "name": names[direction], "pid": 0, "tid": GPU_TID, "ts": ts, "dur": 1.5, "args": args})

    def kernel(self, name: str, ts: float, corr: int, ext: int) -> None:
        args = {"External id": ext, "device": 0, "stream": 7, "correlation": corr}
        self.events.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": GPU_TID, "ts": ts, "dur": 2.0, "args": args})

    def dispatched(self, outer: list[str], op: str, seq: int, ts: float) -> int:
        """outer cpu_ops > op > PythonDispatchMode > copyhunt#seq > op (redispatch); returns the inner External id."""
        t = ts
        for name in [*outer, op, "PythonDispatchMode"]:
            self.cpu(name, t, 90.0 - (t - ts))
            t += 1.0
        self.cpu(f"{kineto.BRIDGE_PREFIX}{seq}", t, 60.0)
        return self.cpu(op, t + 1.0, 50.0)

    def parse(self) -> kineto.KinetoTrace:
        return kineto.parse({"schemaVersion": 1, "traceEvents": self.events})


def site(line: int) -> Frame:
    return Frame("model.py", line, "forward")


def program() -> tuple[Trace, kineto.KinetoTrace]:
    """``.item()`` (seq 5, a dispatch d2h copy), ``x[mask]`` (seq 6: aten.index, not a copy, copies inside),
    ``x.to(torch.bfloat16)`` (seq 7, a copy kernel), and a memcpy from a thread the hunt never saw."""
    d = Doc()
    # seq 5: x.item() -> aten::item > aten::_local_scalar_dense: a 4-byte DtoH memcpy and a sync.
    ext = d.dispatched(["aten::item"], "aten::_local_scalar_dense", 5, 1000.0)
    c = d.launch("cudaMemcpyAsync", 1010.0, ext)
    d.launch("cudaStreamSynchronize", 1016.0, ext)
    d.memcpy("DtoH", 1012.0, c, ext, 4)
    # seq 6: x[mask] -> aten::index; inside C++ it runs nonzero, whose count comes back by an 8-byte DtoH.
    ext = d.dispatched([], "aten::index", 6, 2000.0)
    nz = d.cpu("aten::nonzero", 2010.0, 30.0)
    d.kernel("void at::native::(anonymous namespace)::count_nonzero_kernel", 2013.0, d.launch("cudaLaunchKernel", 2011.0, nz), nz)
    d.memcpy("DtoH", 2020.0, d.launch("cudaMemcpyAsync", 2018.0, nz), nz, 8)
    d.kernel("void at::native::index_elementwise_kernel<128, 4>", 2045.0, d.launch("cudaLaunchKernel", 2042.0, ext), ext)
    # seq 7: x.to(torch.bfloat16) -> aten::to > aten::_to_copy (the dispatch copy) > aten::copy_ > copy kernel.
    ext = d.dispatched(["aten::to"], "aten::_to_copy", 7, 3000.0)
    cp = d.cpu("aten::copy_", 3010.0, 20.0)
    d.kernel("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda>", 3015.0, d.launch("cudaLaunchKernel", 3012.0, cp), cp)
    # Another thread the hunt never traced: a 24-byte HtoD with no bridge range anywhere around it.
    other = d.cpu("aten::copy_", 4000.0, 20.0, tid=411)
    d.memcpy("HtoD", 4006.0, d.launch("cudaMemcpyAsync", 4003.0, other, tid=411), other, 24)

    item = CopyRecord(
        seq=5, op="aten._local_scalar_dense.default", kind="d2h", bytes=4, noop=False, src_device="cuda:0",
        dst_device="cpu", shape=(), dtype="torch.float32", site=site(10), module="model", region="decode",
    )
    cast = CopyRecord(
        seq=7, op="aten._to_copy.default", kind="d2d", bytes=128, noop=False, src_device="cuda:0",
        dst_device="cuda:0", shape=(64,), dtype="torch.bfloat16", site=site(12), module="model", region="decode",
    )
    ops = (
        OpRecord(seq=5, op="aten._local_scalar_dense.default", site=site(10), module="model", region="decode", is_copy=True),
        OpRecord(seq=6, op="aten.index.Tensor", site=site(11), module="model.router", region="decode"),
        OpRecord(seq=7, op="aten._to_copy.default", site=site(12), module="model", region="decode", is_copy=True),
    )
    return Trace(copies=(item, cast), ops=ops), d.parse()


def test_item_memcpy_joins_its_dispatch_d2h_record() -> None:
    trace, kt = program()
    j = device.join_kineto(trace, kt)
    (item,) = [c for c in j.read_copies() if c.seq == 5]
    assert (item.origin, item.kind, item.site, item.device.name, item.device.bytes) == (  # type: ignore[union-attr]
        "dispatch", "d2h", site(10), "Memcpy DtoH (Device -> Pageable)", 4
    )


def test_copy_inside_a_non_copy_op_gets_that_ops_line_module_and_region() -> None:
    trace, kt = program()
    j = device.join_kineto(trace, kt)
    (inside,) = [c for c in j.read_copies() if c.seq == 6]
    # The 8-byte count read inside aten::index: on x[mask]'s line, in model.router, region decode.
    assert (inside.origin, inside.op, inside.kind, inside.bytes, inside.site, inside.module, inside.region) == (
        "device", "aten.index.Tensor", "d2h", 8, site(11), "model.router", "decode"
    )
    # The count kernel and the index kernel are not copies: one record, not three.
    assert len([c for c in j.read_copies() if c.seq == 6]) == 1


def test_copy_kernel_of_a_composite_joins_the_dispatch_copy() -> None:
    trace, kt = program()
    (cast,) = [c for c in device.join_kineto(trace, kt).read_copies() if c.seq == 7]
    assert cast.origin == "dispatch" and cast.device is not None and cast.device.name == "direct_copy_kernel_cuda"


def test_only_the_untraced_threads_copy_lacks_a_line_and_the_trace_says_so() -> None:
    trace, kt = program()
    j = device.join_kineto(trace, kt)
    lost = [c for c in j.read_copies() if c.site is None]
    assert [(c.origin, c.seq, c.op, c.kind, c.bytes) for c in lost] == [("device", -1, "aten::copy_", "h2d", 24)]
    dj = j.meta.device_join
    assert (dj["joined"], dj["unexplained"], dj["no_site"]) == (2, 2, 1)
    assert any(n.startswith("1 device copy(ies) launched outside every op the hunt saw") for n in j.meta.notes)


def test_without_op_records_a_copy_inside_an_op_has_no_line_and_a_note_says_why() -> None:
    trace, kt = program()
    j = device.join_kineto(Trace(copies=trace.copies), kt)  # record_ops=False: copy records only
    (inside,) = [c for c in j.read_copies() if c.seq == 6]
    assert inside.site is None and inside.op == "aten::nonzero"  # named by the innermost cpu_op in Kineto
    assert any("record_ops=False" in n for n in j.meta.notes)


def test_table_names_the_op_that_launched_each_device_copy() -> None:
    import io

    from rich.console import Console

    from copyhunt.report.table import render_table
    from copyhunt.view import view

    trace, kt = program()
    j = device.join_kineto(trace, kt)
    buf = io.StringIO()
    render_table(view(j), Console(file=buf, width=100, color_system=None), top=0)
    rows = {line.split()[0]: line for line in buf.getvalue().splitlines() if "model.py:" in line}
    # item() is named with the call users write; the copy inside x[mask] names aten.index.
    assert rows["model.py:10"].split()[2:6] == ["item", "->", "_local_scalar_dense", "d2h"]
    assert rows["model.py:11"].split()[2:4] == ["index.Tensor", "d2h"]
    assert "(no source site)" in buf.getvalue()  # the untraced thread's copy, listed, not hidden


def _bridge_every_top_level_op(name: str) -> tuple[Trace, kineto.KinetoTrace]:
    """A real H200 fixture with a bridge range around every top-level cpu_op (what the hunt opens
    around every op it dispatches), and an OpRecord per op that is NOT a copy record: every GPU copy
    must then be attributed through its op's range alone."""
    import gzip
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "traces" / "kineto-h200" / f"{name}.json.gz"
    with gzip.open(path, "rt") as f:
        doc = json.load(f)
    ops = sorted((e for e in doc["traceEvents"] if e.get("cat") == "cpu_op"), key=lambda e: (e["ts"], -e["dur"]))
    top: list[dict[str, Any]] = []
    for e in ops:
        if not top or e["ts"] >= top[-1]["ts"] + top[-1]["dur"]:
            top.append(e)
    events = list(doc["traceEvents"])
    records = []
    for seq, e in enumerate(top):
        events.append({**e, "name": f"{kineto.BRIDGE_PREFIX}{seq}", "ts": e["ts"] - 0.01, "dur": e["dur"] + 0.02, "args": {}})
        records.append(OpRecord(seq=seq, op=e["name"].replace("::", ".") + ".default", site=site(100 + seq)))
    return Trace(ops=tuple(records)), kineto.parse({**doc, "traceEvents": events})


def test_real_h200_fixtures_every_copy_finds_its_op_through_per_op_ranges() -> None:
    # (fixture, copies it made on the GPU, as listed in traces/kineto-h200/index.json's lines)
    want = {"d2d_contiguous": 1, "dtype_cast": 2, "non_contiguous": 2, "clone_cat": 2, "host_device": 3}
    for name, n in want.items():
        trace, kt = _bridge_every_top_level_op(name)
        j = device.join_kineto(trace, kt)
        assert len(j.read_copies()) == n, name
        assert all(c.origin == "device" and c.site is not None and c.seq >= 0 for c in j.read_copies()), name
        assert j.meta.device_join["no_site"] == 0
    trace, kt = _bridge_every_top_level_op("host_device")
    kinds = [(c.op, c.kind, c.bytes) for c in device.join_kineto(trace, kt).read_copies()]
    # h.to(DEV), hp.to(DEV, non_blocking=True), d.cpu(): 64 x 3072 bf16 = 393216 bytes each
    assert kinds == [("aten.to.default", "h2d", 393216), ("aten.to.default", "h2d", 393216), ("aten.to.default", "d2h", 393216)]
