"""The first Perfetto/Chrome export: one event per copy on a copyhunt track."""

from __future__ import annotations

import json

from copyhunt.records import Copy, DeviceTiming, Frame, TraceMeta
from copyhunt.view import view
from factories import copy, trace
from copyhunt.report.perfetto import to_chrome_trace, write_perfetto


def cp(seq: int, site: Frame | None, **kw) -> Copy:
    return copy(seq, 8, site=site, shape=(2,), **kw)


def test_logical_clock_without_device_times(tmp_path):
    shown = view(trace(
        cp(4, Frame("a.py", 3, "f"), verdict="noop", module="m"),
        cp(9, None, timing=DeviceTiming("Memcpy DtoD (Device -> Device)", 2.0, 8)),  # no start time
        meta=TraceMeta(target="t.py"),
    ))
    doc = to_chrome_trace(shown)
    meta = [e for e in doc["traceEvents"] if e["ph"] == "M"]
    assert [(e["name"], e["args"]["name"]) for e in meta] == [("process_name", "copyhunt"), ("thread_name", "copies")]
    events = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    # Not every copy has a device start time: ts is the op sequence number, 1 us each.
    assert [(e["name"], e["ts"], e["dur"]) for e in events] == [("a.py:3 f [noop]", 4.0, 1.0), ("copy_", 9.0, 1.0)]
    assert events[0]["args"] == {
        "seq": 4, "op": "aten.copy_.default", "kind": "d2d", "bytes": 8, "noop": False, "shape": [2],
        "dtype": "torch.float32", "src_device": "cpu", "dst_device": "cpu", "origin": "dispatch",
        "module": "m", "verdict": "noop",
    }
    assert events[1]["args"]["device_time_us"] == 2.0
    assert doc["otherData"]["clock"] == "logical: ts = op sequence number"
    path = write_perfetto(shown, tmp_path / "sub" / "tl.json")
    assert json.loads(path.read_text()) == doc


def test_empty_trace_has_only_the_track():
    doc = to_chrome_trace(view(trace()))
    assert [e["ph"] for e in doc["traceEvents"]] == ["M", "M"]
