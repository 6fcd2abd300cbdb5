"""Perfetto export with device times: one track per site, beside the original GPU timeline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from copyhunt.kineto import read_json
from copyhunt.importers import load_any
from copyhunt.records import Copy, DeviceTiming, Frame
from copyhunt.view import view
from factories import copy, trace
from copyhunt.report.perfetto import to_chrome_trace

FIX = Path(__file__).resolve().parent.parent / "traces" / "kineto-h200"


def test_site_tracks_beside_the_original_gpu_timeline() -> None:
    path = FIX / "graph_capture_and_replay__stack.json.gz"
    doc = to_chrome_trace(view(load_any(path)))  # 10 copies, one site (body, line 93)
    original = read_json(path)["traceEvents"]
    ours = [e for e in doc["traceEvents"] if e.get("pid") == "copyhunt"]
    assert len(doc["traceEvents"]) == len(original) + len(ours)
    names = [e["args"]["name"] for e in ours if e["ph"] == "M" and e["name"] == "thread_name"]
    assert names == ["capture_torch_fixtures.py:93 body"]
    copies = [e for e in ours if e["ph"] == "X"]
    assert len(copies) == 10
    # Each copy sits exactly on its GPU event: same start as the memcpy / copy kernel in the original.
    gpu_starts = {e["ts"] for e in original if e.get("cat") in ("gpu_memcpy", "kernel")}
    assert all(e["ts"] in gpu_starts for e in copies)
    assert doc["otherData"]["clock"] == "device start time (us)" and doc["otherData"]["timeline"] == str(path)


def test_tracks_named_by_site_and_verdict_sorted_by_bytes() -> None:
    def cp(seq: int, line: int, nbytes: int, start: float, verdict: str | None) -> Copy:
        return copy(seq, nbytes, src_device="cuda:0", dst_device="cuda:0", shape=(), dtype="", site=Frame("m.py", line, "f"),
                    verdict=verdict, timing=DeviceTiming("Memcpy DtoD (Device -> Device)", 2.0, nbytes, 7, start))

    untimed = replace(cp(3, 9, 4, 0.0, None), device=None)
    doc = to_chrome_trace(view(trace(cp(1, 5, 100, 10.0, "needed"), cp(2, 7, 300, 20.0, "dead-store"), untimed)))
    names = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"]
    # 300 bytes at line 7 first, then 100 bytes at line 5; the untimed CPU copy is left off the GPU clock.
    assert names == ["m.py:7 f [dead-store]", "m.py:5 f [needed]"]
    assert [(e["ts"], e["dur"]) for e in doc["traceEvents"] if e["ph"] == "X"] == [(10.0, 2.0), (20.0, 2.0)]
    assert doc["otherData"]["untimed_copies"].startswith("1 copies without device time")
    assert "timeline" not in doc["otherData"]


def test_missing_timeline_file_is_said(tmp_path: Path) -> None:
    imported = load_any(FIX / "d2d_contiguous.json.gz")
    moved = replace(imported, meta=replace(imported.meta, kineto_trace=str(tmp_path / "gone.json")))
    doc = to_chrome_trace(view(moved))
    assert doc["otherData"]["timeline"].startswith("not found:")
    assert all(e.get("pid") == "copyhunt" for e in doc["traceEvents"])


def test_rocprof_import_gets_op_tracks() -> None:
    doc = to_chrome_trace(view(load_any(FIX.parent / "rocprof-synthetic" / "results.db")))
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert len([e for e in doc["traceEvents"] if e["ph"] == "X"]) == 8
    assert len(names) == 3  # no Python sites: one track per op (D2D, H2D, blit kernel)
