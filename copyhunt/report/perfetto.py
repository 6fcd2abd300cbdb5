"""``copyhunt report FILE --perfetto OUT.json``: copies as events in a Chrome / Perfetto trace.

Each copy becomes one complete ("X") event on a "copyhunt" track, named by its source site and
verdict, with its facts in ``args``. Copies with device timing sit at their GPU start time; without
it (CPU traces) the timeline is logical: one microsecond slot per op sequence number, so the order
is right but durations mean nothing (``otherData.clock`` says which). The device-capture helper
extends this module to lay the copies beside the original GPU timeline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from copyhunt.records import CopyRecord, Trace
from copyhunt.report.units import short_op

#: Process id of the copyhunt track in the exported trace (any id not used by Kineto's own pids).
COPYHUNT_PID = "copyhunt"
COPYHUNT_TID = "copies"


def copy_event_name(copy: CopyRecord) -> str:
    """``path:line function [verdict]`` (or the op when the copy has no source site)."""
    name = copy.site.short() if copy.site is not None else short_op(copy.op)
    return f"{name} [{copy.verdict}]" if copy.verdict else name


def to_chrome_trace(trace: Trace) -> dict[str, Any]:
    """The Chrome trace-event document (``{"traceEvents": [...]}``) for ``trace``'s copies."""
    device_clock = bool(trace.copies) and all(
        c.device is not None and c.device.start_us is not None for c in trace.copies
    )
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": COPYHUNT_PID, "tid": COPYHUNT_TID, "args": {"name": "copyhunt"}},
        {"ph": "M", "name": "thread_name", "pid": COPYHUNT_PID, "tid": COPYHUNT_TID, "args": {"name": "copies"}},
    ]
    for c in trace.copies:
        if device_clock and c.device is not None and c.device.start_us is not None:
            ts, dur = c.device.start_us, max(c.device.time_us, 0.001)
        else:
            ts, dur = float(c.seq), 1.0
        events.append(
            {
                "ph": "X",
                "cat": "copy",
                "name": copy_event_name(c),
                "pid": COPYHUNT_PID,
                "tid": COPYHUNT_TID,
                "ts": ts,
                "dur": dur,
                "args": _event_args(c),
            }
        )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "producer": "copyhunt",
            "target": trace.meta.target,
            "device": trace.meta.device,
            "clock": "device start time (us)" if device_clock else "logical: ts = op sequence number",
        },
    }


def write_perfetto(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """Write `to_chrome_trace(trace)` to ``path`` (open it in ui.perfetto.dev or chrome://tracing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_chrome_trace(trace)) + "\n", encoding="utf-8")
    return path


def _event_args(c: CopyRecord) -> dict[str, Any]:
    """The facts shown when the event is selected."""
    args: dict[str, Any] = {
        "seq": c.seq,
        "op": c.op,
        "kind": c.kind,
        "bytes": c.bytes,
        "noop": c.noop,
        "shape": list(c.shape),
        "dtype": c.dtype,
        "src_device": c.src_device,
        "dst_device": c.dst_device,
        "origin": c.origin,
    }
    for key in ("module", "region", "verdict", "reason", "suggestion"):
        value = getattr(c, key)
        if value is not None:
            args[key] = value
    if c.device is not None:
        args["device_event"] = c.device.name
        args["device_time_us"] = c.device.time_us
    return args
