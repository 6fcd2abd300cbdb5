"""Real device-captured hunts from the H200 (traces/moe-h200/, made by traces/capture_moe_traces.py):
the stored join results, and the join re-run from the stored Kineto traces, on the CPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from copyhunt import kineto
from copyhunt.capture import device
from copyhunt.importers import load_any
from copyhunt.records import Trace
from copyhunt.tracefile import load
from copyhunt.view import view
from copyhunt.report.perfetto import to_chrome_trace

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "traces" / "moe-h200"
MK_BYTES = 8 * 3072 * 2  # demo on the GPU: 8 tokens x hidden 3072, bf16 = 49152 bytes per output copy


def strip(trace: Trace) -> Trace:
    """The trace as the dispatch capture left it, before the device join."""
    return replace(trace, timings={}, findings=None, meta=replace(trace.meta, gpu_time_us=None))


def test_moe_baseline_two_memcpys_per_layer_and_fixed_none() -> None:
    base, fixed = load(FIX / "moe-baseline.json"), load(FIX / "moe-fixed.json")
    # 4 layers x 2 output copies, each a contiguous bf16 memcpy of 49152 bytes, at modular.py:51 and :86.
    assert len(base.copies) == 8 and fixed.copies == ()
    assert {(Path(c.site.file).name, c.site.line) for c in base.copies if c.site} == {("modular.py", 51), ("modular.py", 86)}
    assert all(c.device and c.device.name == "Memcpy DtoD (Device -> Device)" and c.device.bytes == MK_BYTES for c in base.read_copies())
    assert base.meta.device_join["joined"] == 8
    assert base.meta.gpu_time_us and base.meta.gpu_time_us > sum(t.time_us for t in base.timings.values())


def test_rejoin_from_the_stored_kineto_trace_gives_the_same_timings() -> None:
    base = load(FIX / "moe-baseline.json")
    kt = kineto.load(FIX / "moe-baseline.kineto.json.gz")
    assert sorted(int(e.name.split("#")[1]) for e in kt.bridge) == sorted(c.seq for c in base.copies)
    again = device.join_kineto(strip(base), kt)
    assert again.copies == base.copies and again.timings == base.timings
    assert again.meta.gpu_time_us == base.meta.gpu_time_us


def test_graph_hunt_six_replays_at_two_lines_and_rejoin() -> None:
    g = load(FIX / "graph-hunt.json")
    # 2 copies captured (lines 66 and 68 of capture_moe_traces.py when the fixture was made), replayed 3 times.
    assert sorted((c.site.line, c.graph_replay) for c in g.copies if c.site) == [(66, 0), (66, 1), (66, 2), (68, 0), (68, 1), (68, 2)]
    assert {t.name for t in g.timings.values()} == {"Memcpy DtoD (Device -> Device)", "direct_copy_kernel_cuda"}
    # Re-join: rebuild the two capture-time dispatch records and join them to the stored Kineto trace.
    captured = {c.seq: replace(c, origin="dispatch", graph_replay=None, graph=None) for c in g.copies}
    again = device.join_kineto(replace(strip(g), copies=tuple(captured.values())), kineto.load(FIX / "graph-hunt.kineto.json.gz"))
    assert again.copies == g.copies and again.timings == g.timings


def test_import_and_timeline_of_the_stored_kineto_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    imported = load_any(FIX / "moe-baseline.kineto.json.gz")
    assert [c.bytes for c in imported.copies] == [MK_BYTES] * 8  # the same 8 memcpys, read as a foreign file
    monkeypatch.chdir(ROOT)  # meta.kineto_trace is stored relative to the repository root
    doc = to_chrome_trace(view(load(FIX / "moe-baseline.json")))
    tracks = [e["args"]["name"] for e in doc["traceEvents"] if e.get("pid") == "copyhunt" and e["name"] == "thread_name"]
    assert len(tracks) == 2 and all("modular.py" in t and "[fresh-temporary]" in t for t in tracks)
    assert doc["otherData"]["timeline"] == "traces/moe-h200/moe-baseline.kineto.json.gz"
    assert any(e.get("cat") == "kernel" for e in doc["traceEvents"])  # the original GPU timeline is there
