"""The device join on real Kineto traces captured on an H200 (torch 2.11 + CUDA 13.0), no GPU needed.

Fixtures: ``traces/kineto-h200/*.json.gz`` made by ``traces/capture_torch_fixtures.py`` (its
``index.json`` lists the source lines). Where a fixture was captured without the dispatch bridge,
the test adds the ``copyhunt#<seq>`` ranges the bridge would have opened around the same cpu_ops
(same thread, enclosing times), and says so.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from copyhunt import kineto
from copyhunt.capture import device
from copyhunt.kineto.graphs import account_replays
from copyhunt.errors import NoDeviceError
from copyhunt.records import CopyRecord, Frame, OpRecord, Trace
from factories import record

FIX = Path(__file__).resolve().parent.parent / "traces" / "kineto-h200"
MK = 64 * 3072  # the fixtures copy 64 x 3072 elements


def raw(name: str) -> dict[str, Any]:
    with gzip.open(FIX / f"{name}.json.gz", "rt") as f:
        return json.load(f)


def with_bridge(doc: dict[str, Any], seqs: dict[int, int]) -> kineto.KinetoTrace:
    """Add a ``copyhunt#<seq>`` range around the cpu_op with External id ``ext`` ({ext: seq})."""
    events = list(doc["traceEvents"])
    for e in doc["traceEvents"]:
        ext = (e.get("args") or {}).get("External id")
        if e.get("cat") == "cpu_op" and ext in seqs:
            events.append(
                {"ph": "X", "cat": "cpu_op", "name": f"copyhunt#{seqs[ext]}", "pid": e["pid"], "tid": e["tid"],
                 "ts": e["ts"] - 0.01, "dur": e["dur"] + 0.02, "args": {}}
            )
    return kineto.parse({**doc, "traceEvents": events})


def rec(seq: int, nbytes: int, line: int, *, dtype: str = "torch.bfloat16", graph: bool = False, kind: str = "d2d") -> CopyRecord:
    return record(seq, nbytes, kind=kind, src_device="cuda:0", dst_device="cuda:0", shape=(64, 3072), dtype=dtype,
                  site=Frame("capture_torch_fixtures.py", line, "body"), captured_in_graph=graph)


def test_bridge_ranges_join_memcpy_and_copy_kernel() -> None:
    # Real bridge ranges (record_function copyhunt#7 / #8 in the captured program).
    kt = kineto.load(FIX / "bridge_record_function.json.gz")
    t = Trace(copies=(rec(7, MK * 2, 81), rec(8, MK * 4, 83, dtype="torch.float32")))
    j = device.join_kineto(t, kt)
    a, b = j.read_copies()
    assert a.device is not None and b.device is not None
    # seq 7: contiguous bf16 -> bf16 is a memcpy: 393216 bytes in 1.152 us (Kineto's numbers).
    assert (a.device.name, a.device.time_us, a.device.bytes, a.device.stream) == ("Memcpy DtoD (Device -> Device)", 1.152, 393216, 7)
    # seq 8: bf16 -> fp32 runs a copy kernel; bytes come from the record: 64*3072*4 = 786432.
    assert (b.device.name, b.device.time_us, b.device.bytes) == ("direct_copy_kernel_cuda", 2.272, 786432)
    assert a.device.bandwidth_gbps == pytest.approx(393216 / 1152)  # bytes / ns = GB/s
    # All GPU time: randn kernel 3.936 + memcpy 1.152 + copy kernel 2.272 = 7.36 us.
    assert j.meta.gpu_time_us == pytest.approx(7.36)
    assert j.meta.device_join["joined"] == 2
    assert [c.origin for c in j.copies] == ["dispatch", "dispatch"]


def test_unexplained_device_copy_is_attributed_to_its_launching_op() -> None:
    # d2d_contiguous: External id 6 is the aten::copy_ that made the memcpy. Pretend the dispatch
    # mode saw it as a non-copy op seq 3 (a library op copying inside C++): no CopyRecord for it.
    kt = with_bridge(raw("d2d_contiguous"), {6: 3})
    op = OpRecord(seq=3, op="mylib.fused.default", site=Frame("model.py", 42, "forward"), module="m.moe")
    j = device.join_kineto(Trace(ops=(op,)), kt)
    (c,) = j.read_copies()
    assert (c.origin, c.seq, c.op, c.kind, c.bytes, c.site, c.module) == (
        "device", 3, "mylib.fused.default", "d2d", 393216, Frame("model.py", 42, "forward"), "m.moe"
    )
    assert c.device is not None and c.device.time_us == 1.152


def test_device_copy_without_bridge_names_the_aten_op() -> None:
    j = device.join_kineto(Trace(), kineto.load(FIX / "d2d_contiguous.json.gz"))
    (c,) = j.copies
    assert (c.origin, c.op, c.seq, c.site) == ("device", "aten::copy_", -1, None)


def test_host_device_kinds_and_bytes() -> None:
    # Three copies: pageable h2d, pinned h2d, d2h (External ids 2060, 2064, 2068), each 393216 bytes.
    kt = with_bridge(raw("host_device"), {2060: 1, 2064: 2, 2068: 3})
    t = Trace(copies=(rec(1, MK * 2, 69, kind="h2d"), rec(2, MK * 2, 70, kind="h2d"), rec(3, MK * 2, 71, kind="d2h")))
    names = [c.device.name for c in device.join_kineto(t, kt).read_copies() if c.device]
    assert names == ["Memcpy HtoD (Pageable -> Device)", "Memcpy HtoD (Pinned -> Device)", "Memcpy DtoH (Device -> Pageable)"]


def test_graph_replays_counted_per_replay_at_capture_lines() -> None:
    # graph_capture_and_replay: warm-up copies (eager, External ids 3085/3087/3093/3095), capture-time
    # copies 3105 (memcpy node, line 97) and 3107 (copy kernel node, line 100), then 3 replays.
    kt = with_bridge(raw("graph_capture_and_replay"), {3085: 1, 3087: 2, 3093: 3, 3095: 4, 3105: 5, 3107: 6})
    t = Trace(
        copies=(
            rec(1, MK * 2, 97), rec(2, MK * 4, 100), rec(3, MK * 2, 97), rec(4, MK * 4, 100),
            rec(5, MK * 2, 97, graph=True), rec(6, MK * 4, 100, graph=True),
        )
    )
    j = device.join_kineto(t, kt)
    replays = [c for c in j.read_copies() if c.origin == "graph-replay"]
    # 2 copies in the graph x 3 replays = 6 copies, at lines 97 and 100, replay index 0..2 each.
    assert len(replays) == 6
    assert sorted((c.site.line, c.graph_replay) for c in replays if c.site) == [
        (97, 0), (97, 1), (97, 2), (100, 0), (100, 1), (100, 2)
    ]
    assert {c.device.name for c in replays if c.site and c.site.line == 97 and c.device} == {"Memcpy DtoD (Device -> Device)"}
    assert {c.device.name for c in replays if c.site and c.site.line == 100 and c.device} == {"direct_copy_kernel_cuda"}
    # The capture itself moved nothing: its records are represented by their replays.
    assert [c.seq for c in j.copies if c.origin == "dispatch"] == [1, 2, 3, 4]
    assert all(c.device is not None for c in j.read_copies())
    assert j.meta.device_join["graph_replays"] == 6


def test_replays_of_a_graph_captured_elsewhere_are_listed_with_a_note() -> None:
    acc = account_replays(kineto.load(FIX / "graph_replay_only.json.gz"))
    assert [n.replay for n in acc.copies()] == [0, 0, 1, 1, 2, 2]
    j = device.join_kineto(Trace(), kineto.load(FIX / "graph_replay_only.json.gz"))
    assert [c.origin for c in j.copies] == ["graph-replay"] * 6
    assert any("captured outside the traced region" in n for n in j.meta.notes)


def test_copy_classifier_on_real_kernel_names() -> None:
    kinds = {}
    for name in ("dtype_cast", "non_contiguous", "clone_cat"):
        kt = kineto.load(FIX / f"{name}.json.gz")
        kinds[name] = sum(1 for e in kt.gpu if kineto.copy_kind(e) is not None)
    # dtype_cast: copy_ + .to() = 2 cast kernels; non_contiguous: contiguous() + copy_(t()) = 2
    # kernels; clone_cat: clone (memcpy) + cat (CatArrayBatchedCopy) = 2. The randn kernels are not copies.
    assert kinds == {"dtype_cast": 2, "non_contiguous": 2, "clone_cat": 2}


def test_no_gpu_raises_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "gpu_available", lambda: False)
    with pytest.raises(NoDeviceError, match="needs a CUDA or ROCm GPU"):
        with device.DeviceCapture():
            pass
