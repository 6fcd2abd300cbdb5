"""Read a Kineto Chrome trace (what torch.profiler exports) into a small indexed event model.

Shared by the device capture (``capture/device.py``), the CUDA-graph replay matcher
(``kineto/graphs.py``) and the Chrome-trace importer. Standard library only; the events themselves
and what their names mean are in ``kineto/events.py``.
"""

from __future__ import annotations

import bisect
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from copyhunt.errors import TraceFormatError
from copyhunt.kineto.events import CPU_OP_CATS, GPU_CATS, RUNTIME_CATS, KEvent, parse_python_frame

#: Name prefix of the ranges the device capture opens around each dispatched op (``copyhunt#<seq>``).
#: torch's fast record_function exports them as ``cpu_op``, the Python one as ``user_annotation``.
BRIDGE_PREFIX = "copyhunt#"


class _Intervals:
    """Events of one thread sorted by start, to find the ones enclosing an instant.

    Ranges on one thread nest (cpu_ops, record_function ranges, Python frames), so each event
    gets its parent once, by a stack sweep; a query then walks up from the last event that
    started before the instant: O(depth), not O(events), even under a region spanning the trace.
    """

    def __init__(self, events: Iterable[KEvent]) -> None:
        self.events = sorted(events, key=lambda e: (e.ts, -e.dur))
        self.starts = [e.ts for e in self.events]
        self.parent: list[int] = []
        stack: list[int] = []
        for i, e in enumerate(self.events):
            while stack and self.events[stack[-1]].end < e.ts:
                stack.pop()
            self.parent.append(stack[-1] if stack else -1)
            stack.append(i)

    def enclosing(self, t: float) -> list[KEvent]:
        """Events with ts <= t <= end, outermost first."""
        j = bisect.bisect_right(self.starts, t) - 1
        while j >= 0 and self.events[j].end < t:
            j = self.parent[j]
        out: list[KEvent] = []
        while j >= 0:
            out.append(self.events[j])
            j = self.parent[j]
        out.reverse()
        return out


@dataclass
class KinetoTrace:
    """A parsed Kineto trace: events by category and the indexes every join needs."""

    gpu: list[KEvent]
    runtime: list[KEvent]
    cpu_ops: list[KEvent]
    annotations: list[KEvent]
    python: list[KEvent]
    meta: dict[str, Any]
    source: str = "trace"
    bridge: list[KEvent] = field(default_factory=list)  # copyhunt#<seq> ranges

    def __post_init__(self) -> None:
        self.gpu.sort(key=lambda e: e.ts)
        self.runtime.sort(key=lambda e: e.ts)
        self.op_by_ext: dict[int, KEvent] = {}
        for e in (*self.cpu_ops, *self.annotations):
            x = e.external_id
            if x is not None:
                self.op_by_ext.setdefault(x, e)
        self.runtime_by_corr: dict[int, KEvent] = {}
        for e in self.runtime:
            c = e.correlation
            if c is not None:
                self.runtime_by_corr.setdefault(c, e)
        self._annot: dict[Any, _Intervals] = {}
        self._ops: dict[Any, _Intervals] = {}
        self._py: dict[Any, _Intervals] = {}
        self._bridge: dict[Any, _Intervals] = {}

    # --- queries -------------------------------------------------------------------------

    @property
    def is_rocm(self) -> bool:
        """True when the trace came from a ROCm build (HIP runtime names or a ROCm meta key)."""
        if any(k.lower().startswith(("roctracer", "rocprof", "hip")) for k in self.meta):
            return True
        return any(e.name.startswith("hip") for e in self.runtime[:200])

    def gpu_time_us(self) -> float:
        """Sum of the durations of all GPU events (kernels, memcpys, memsets) in the trace."""
        return sum(e.dur for e in self.gpu)

    def launcher(self, ev: KEvent) -> KEvent | None:
        """The CPU-side event that launched GPU event ``ev``: its runtime call, else its cpu_op."""
        c = ev.correlation
        if c is not None and c in self.runtime_by_corr:
            return self.runtime_by_corr[c]
        x = ev.external_id
        return self.op_by_ext.get(x) if x is not None else None

    def _index(self, cache: dict[Any, _Intervals], events: list[KEvent], tid: Any) -> _Intervals:
        if not cache:
            by_tid: dict[Any, list[KEvent]] = {}
            for e in events:
                by_tid.setdefault(e.tid, []).append(e)
            for k, v in by_tid.items():
                cache[k] = _Intervals(v)
            cache.setdefault(object(), _Intervals(()))  # non-empty marker: indexed
        return cache.get(tid) or _Intervals(())

    def annotations_at(self, tid: Any, t: float) -> list[KEvent]:
        """record_function ranges on thread ``tid`` enclosing instant ``t``, outermost first."""
        return self._index(self._annot, self.annotations, tid).enclosing(t)

    def bridge_seq_at(self, tid: Any, t: float) -> int | None:
        """Sequence number of the innermost ``copyhunt#<seq>`` range on ``tid`` enclosing ``t``."""
        for e in reversed(self._index(self._bridge, self.bridge, tid).enclosing(t)):
            tail = e.name[len(BRIDGE_PREFIX) :]
            if tail.isdigit():
                return int(tail)
        return None

    def cpu_ops_at(self, tid: Any, t: float) -> list[KEvent]:
        """cpu_ops on thread ``tid`` enclosing instant ``t``, outermost first."""
        return self._index(self._ops, self.cpu_ops, tid).enclosing(t)

    def python_stack_at(self, tid: Any, t: float) -> list[tuple[str, int, str]]:
        """Python frames (with_stack) on ``tid`` enclosing ``t``, innermost first; [] without stacks."""
        frames = []
        for e in self._index(self._py, self.python, tid).enclosing(t):
            f = parse_python_frame(e.name)
            if f is not None:
                frames.append(f)
        frames.reverse()
        return frames


def parse(doc: Any, source: str = "trace") -> KinetoTrace:
    """Parse a Chrome trace document (dict with ``traceEvents``, or a bare event list)."""
    if isinstance(doc, dict):
        events = doc.get("traceEvents")
        meta = {k: v for k, v in doc.items() if k != "traceEvents"}
    else:
        events, meta = doc, {}
    if not isinstance(events, list):
        raise TraceFormatError(f"{source}: not a Chrome trace (no 'traceEvents' list)")
    gpu: list[KEvent] = []
    runtime: list[KEvent] = []
    cpu_ops: list[KEvent] = []
    annotations: list[KEvent] = []
    python: list[KEvent] = []
    bridge: list[KEvent] = []
    bad = good = 0
    for raw in events:
        if not isinstance(raw, dict):
            bad += 1
            continue
        if raw.get("ph") != "X":
            continue
        cat = str(raw.get("cat", ""))
        try:
            ev = KEvent(
                cat=cat,
                name=str(raw.get("name", "")),
                ts=float(raw["ts"]),
                dur=float(raw.get("dur", 0.0)),
                pid=raw.get("pid"),
                tid=raw.get("tid"),
                args=raw.get("args") or {},
            )
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue  # a malformed event is skipped, not fatal: profilers emit odd spans
        good += 1
        if ev.name.startswith(BRIDGE_PREFIX) and cat in (*CPU_OP_CATS, "user_annotation"):
            bridge.append(ev)
        elif cat in GPU_CATS:
            gpu.append(ev)
        elif cat in RUNTIME_CATS:
            runtime.append(ev)
        elif cat in CPU_OP_CATS:
            cpu_ops.append(ev)
        elif cat == "user_annotation":
            annotations.append(ev)
        elif cat == "python_function":
            python.append(ev)
    if bad and not good:  # nothing usable: refusing beats importing "no copies" (a gate would pass it)
        raise TraceFormatError(f"{source}: not a usable Chrome trace ({bad} malformed events, none valid)")
    return KinetoTrace(
        gpu=gpu, runtime=runtime, cpu_ops=cpu_ops, annotations=annotations, python=python, meta=meta, source=source, bridge=bridge
    )


def read_json(path: str | Path) -> Any:
    """Read a JSON file, gzip-compressed or not; TraceFormatError (one line) on failure."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(p, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            return json.load(f)
    except FileNotFoundError:
        raise TraceFormatError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TraceFormatError(f"{p}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{p}: not valid JSON, truncated or corrupt (line {exc.lineno}: {exc.msg})") from None


def load(path: str | Path) -> KinetoTrace:
    """Read and parse a Chrome trace file (``.json`` or ``.json.gz``)."""
    return parse(read_json(path), source=str(path))
