"""Read a Kineto Chrome trace (what torch.profiler exports) into a small indexed event model.

Shared by the device capture (``capture/device.py``), the CUDA-graph replay matcher
(``kineto/graphs.py``) and the Chrome-trace importer. Standard library only; the events themselves
and what their names mean are in ``kineto/events.py``.
"""

from __future__ import annotations

import bisect
import gzip
import json
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


#: Categories parsed only when a query needs them (``KinetoTrace`` builds their events on first use):
#: a device-captured hunt's trace is mostly cpu_ops (every aten op, nested ones too, and torch's
#: ``PythonDispatchMode`` range around each op the mode sees), and its join asks about them only for
#: the few GPU copies no dispatch copy explains.
LAZY_CATS = frozenset({*CPU_OP_CATS, "user_annotation", "python_function"})


def _event(raw: dict[str, Any], cat: str) -> KEvent:
    """One KEvent of a raw Chrome event; KeyError/TypeError/ValueError when it is malformed."""
    return KEvent(
        cat=cat,
        name=str(raw.get("name", "")),
        ts=float(raw["ts"]),
        dur=float(raw.get("dur", 0.0)),
        pid=raw.get("pid"),
        tid=raw.get("tid"),
        args=raw.get("args") or {},
    )


class KinetoTrace:
    """A parsed Kineto trace: events by category and the indexes every join needs.

    ``pending``: raw events of ``LAZY_CATS`` (cpu_ops, record_function ranges, Python frames, bridge
    ranges excepted) not turned into events yet; ``cpu_ops``, ``annotations``, ``python``, ``op_by_ext``
    and the queries over them build them, once, on first use (same events, same order as an eager parse).
    """

    def __init__(
        self,
        gpu: list[KEvent],
        runtime: list[KEvent],
        cpu_ops: list[KEvent],
        annotations: list[KEvent],
        python: list[KEvent],
        meta: dict[str, Any],
        source: str = "trace",
        bridge: list[KEvent] | None = None,
        *,
        pending: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        self.gpu = gpu
        self.runtime = runtime
        self._cpu_ops = cpu_ops
        self._annotations = annotations
        self._python = python
        self.meta = meta
        self.source = source
        self.bridge: list[KEvent] = bridge if bridge is not None else []  # copyhunt#<seq> ranges
        self._pending = pending or None
        self.gpu.sort(key=lambda e: e.ts)
        self.runtime.sort(key=lambda e: e.ts)
        self._op_by_ext: dict[int, KEvent] | None = None
        self.runtime_by_corr: dict[int, KEvent] = {}
        for e in self.runtime:
            c = e.correlation
            if c is not None:
                self.runtime_by_corr.setdefault(c, e)
        self._annot: dict[Any, _Intervals] = {}
        self._ops: dict[Any, _Intervals] = {}
        self._py: dict[Any, _Intervals] = {}
        self._bridge: dict[Any, _Intervals] = {}

    def _materialize(self) -> int:
        """Build the pending events (malformed ones skipped, as ``parse`` does); return how many were good."""
        pending, self._pending = self._pending, None
        good = 0
        if pending:
            ops, annotations, python = self._cpu_ops, self._annotations, self._python
            for cat, raw in pending:
                try:
                    ev = _event(raw, cat)
                except (KeyError, TypeError, ValueError):
                    continue
                good += 1
                if cat == "user_annotation":
                    annotations.append(ev)
                elif cat == "python_function":
                    python.append(ev)
                else:
                    ops.append(ev)
        return good

    @property
    def cpu_ops(self) -> list[KEvent]:
        """cpu_op events (operators), in trace order; bridge ranges excluded."""
        if self._pending is not None:
            self._materialize()
        return self._cpu_ops

    @property
    def annotations(self) -> list[KEvent]:
        """``user_annotation`` events (record_function ranges), in trace order."""
        if self._pending is not None:
            self._materialize()
        return self._annotations

    @property
    def python(self) -> list[KEvent]:
        """``python_function`` events (with_stack frames), in trace order."""
        if self._pending is not None:
            self._materialize()
        return self._python

    @property
    def op_by_ext(self) -> dict[int, KEvent]:
        """cpu_ops and ranges by ``External id`` (the first one of each id)."""
        if self._op_by_ext is None:
            by: dict[int, KEvent] = {}
            for e in (*self.cpu_ops, *self.annotations):
                x = e.external_id
                if x is not None:
                    by.setdefault(x, e)
            self._op_by_ext = by
        return self._op_by_ext

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
    bridge: list[KEvent] = []
    pending: list[tuple[str, dict[str, Any]]] = []
    bad = good = 0
    lazy_cats, gpu_cats, runtime_cats = LAZY_CATS, GPU_CATS, RUNTIME_CATS
    for raw in events:
        if not isinstance(raw, dict):
            bad += 1
            continue
        if raw.get("ph") != "X":
            continue
        cat = raw.get("cat", "")
        if type(cat) is not str:
            cat = str(cat)
        if cat in lazy_cats:
            name = raw.get("name")
            if not (type(name) is str and name.startswith(BRIDGE_PREFIX) and cat != "python_function"):
                pending.append((cat, raw))  # built on first use (KinetoTrace._materialize)
                continue
        elif cat not in gpu_cats and cat not in runtime_cats:
            # Other categories are dropped, as before; only their well-formedness counts.
            try:
                _event(raw, cat)
            except (KeyError, TypeError, ValueError):
                bad += 1
            else:
                good += 1
            continue
        try:
            ev = _event(raw, cat)
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue  # a malformed event is skipped, not fatal: profilers emit odd spans
        good += 1
        if cat in gpu_cats:
            gpu.append(ev)
        elif cat in runtime_cats:
            runtime.append(ev)
        else:
            bridge.append(ev)
    kt = KinetoTrace(gpu=gpu, runtime=runtime, cpu_ops=[], annotations=[], python=[], meta=meta, source=source,
                     bridge=bridge, pending=pending)
    if not good and pending:  # only malformed events so far: whether the lazy ones are usable decides
        lazy_good = kt._materialize()
        good, bad = lazy_good, bad + len(pending) - lazy_good
    if bad and not good:
        # nothing usable: refusing beats importing "no copies" (a gate would pass it)
        raise TraceFormatError(f"{source}: not a usable Chrome trace ({bad} malformed events, none valid)")
    return kt


def read_json(path: str | Path) -> Any:
    """Read a JSON file, gzip-compressed or not; TraceFormatError (one line) on failure."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(2)
        if head != b"\x1f\x8b":
            return json.loads(p.read_bytes())  # bytes straight to the decoder: no text-layer pass
        with gzip.open(p, "rt", encoding="utf-8") as f:
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
