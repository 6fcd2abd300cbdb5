"""``copyhunt report FILE --perfetto OUT.json``: copies as events in a Chrome / Perfetto trace.

Each copy becomes one complete ("X") event on a "copyhunt" track, named by its source site and
verdict, with its facts in ``args``. Copies with device timing sit at their GPU start time; without
it (CPU traces) the timeline is logical: one microsecond slot per op sequence number, so the order
is right but durations mean nothing (``otherData.clock`` says which). The device-capture helper
extends this module: with device times, one track per site on the GPU clock, beside the original
GPU timeline when the capture kept one (``meta.kineto_trace``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from copyhunt.records import Copy
from copyhunt.text import short_op
from copyhunt.view import TraceView

#: Process id of the copyhunt track in the exported trace (any id not used by Kineto's own pids).
COPYHUNT_PID = "copyhunt"
COPYHUNT_TID = "copies"


def copy_event_name(copy: Copy) -> str:
    """``path:line function [verdict]`` (or the op when the copy has no source site)."""
    name = copy.site.short() if copy.site is not None else short_op(copy.op)
    return f"{name} [{copy.verdict}]" if copy.verdict else name


def to_chrome_trace(view: TraceView, *, timeline: Any = None) -> dict[str, Any]:
    """The Chrome trace-event document (``{"traceEvents": [...]}``) for the copies ``view`` shows.

    Without device times: one "copies" track on a logical clock. With device times (a device
    capture or an imported profiler file), each source site gets its own copyhunt track, named
    by the site and its verdict, on the GPU clock; and the original GPU timeline (``timeline``,
    else the Kineto trace named in ``meta.kineto_trace``) is laid beside it.
    """
    timed = [c for c in view.copies if c.device is not None and c.device.start_us is not None]
    device_clock = bool(timed)
    other: dict[str, Any] = {
        "producer": "copyhunt",
        "target": view.meta.target,
        "device": view.meta.device,
        "clock": "device start time (us)" if device_clock else "logical: ts = op sequence number",
    }
    if device_clock:
        events = _site_tracks(timed)
        untimed = len(view.copies) - len(timed)
        if untimed:
            other["untimed_copies"] = f"{untimed} copies without device time (CPU copies, no-ops) are not on the GPU clock"
        original, source = _original_timeline(view.meta.kineto_trace, timeline)
        if original is not None:
            events.extend(original)
        if source is not None:
            other["timeline"] = source
        return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}
    events = [
        {"ph": "M", "name": "process_name", "pid": COPYHUNT_PID, "tid": COPYHUNT_TID, "args": {"name": "copyhunt"}},
        {"ph": "M", "name": "thread_name", "pid": COPYHUNT_PID, "tid": COPYHUNT_TID, "args": {"name": "copies"}},
    ]
    for c in view.copies:
        events.append(
            {
                "ph": "X",
                "cat": "copy",
                "name": copy_event_name(c),
                "pid": COPYHUNT_PID,
                "tid": COPYHUNT_TID,
                "ts": float(c.seq),
                "dur": 1.0,
                "args": _event_args(c),
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def _site_tracks(copies: list[Copy]) -> list[dict[str, Any]]:
    """One copyhunt track per site (named ``site [verdict]``), copies at their GPU start time."""
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": COPYHUNT_PID, "tid": 0, "args": {"name": "copyhunt"}},
        {"ph": "M", "name": "process_sort_index", "pid": COPYHUNT_PID, "tid": 0, "args": {"sort_index": -1}},
    ]
    tracks: dict[str, int] = {}
    # Tracks in order of bytes, largest first, so the costly sites sit at the top.
    by_site: dict[str, int] = {}
    for c in copies:
        by_site[copy_event_name(c)] = by_site.get(copy_event_name(c), 0) + c.bytes
    for i, label in enumerate(sorted(by_site, key=lambda k: (-by_site[k], k)), start=1):
        tracks[label] = i
        events.append({"ph": "M", "name": "thread_name", "pid": COPYHUNT_PID, "tid": i, "args": {"name": label}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": COPYHUNT_PID, "tid": i, "args": {"sort_index": i}})
    for c in copies:
        if c.device is None or c.device.start_us is None:  # the caller passes timed copies only
            continue
        label = copy_event_name(c)
        events.append(
            {
                "ph": "X",
                "cat": "copy",
                "name": label,
                "pid": COPYHUNT_PID,
                "tid": tracks[label],
                "ts": c.device.start_us,
                "dur": max(c.device.time_us, 0.001),
                "args": _event_args(c),
            }
        )
    return events


def _original_timeline(path: str | None, timeline: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The original profiler events to lay beside the copies, and where they came from."""
    if timeline is not None:
        doc, source = timeline, "given"
    else:
        if not path:
            return None, None
        if not Path(path).exists():
            return None, f"not found: {path} (the copies are shown alone)"
        from copyhunt.kineto import read_json

        try:
            doc, source = read_json(path), str(path)
        except Exception as exc:  # noqa: BLE001 - a damaged side file must not cost the user the export
            return None, f"unreadable: {path} ({exc})"
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        return None, f"{source}: no traceEvents"
    return list(events), source


def write_perfetto(view: TraceView, path: str | os.PathLike[str], force: bool = True) -> Path:
    """Write `to_chrome_trace(view)` to ``path`` (open it in ui.perfetto.dev or chrome://tracing).

    Without ``force`` the name is created exclusively; a folder that cannot be made or written is one
    line (OutputWriteError), never a traceback."""
    from copyhunt.report.html import write_html  # the one exclusive, atomic writer of report files

    return write_html(json.dumps(to_chrome_trace(view), allow_nan=False) + "\n", path, force=force, option="--perfetto")


def _event_args(c: Copy) -> dict[str, Any]:
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
        if value:  # None, or an empty reason: nothing to say
            args[key] = value
    if c.device is not None:
        args["device_event"] = c.device.name
        args["device_time_us"] = c.device.time_us
    return args
