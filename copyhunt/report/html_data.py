"""What the HTML report shows, as JSON-ready data: copies folded by call stack, all trace text cleaned.

Traces come from strangers: every string is cut to a bounded length with its control and
bidirectional characters made visible (`clean_text`), every number is made finite and non-negative,
and no file a trace names is opened (a site's source text is shown only when the trace carries it).
Copies fold into one entry per (call stack, op, kind, verdict), so the data grows with the number
of distinct stacks, not copies; past MAX_STACKS entries the smallest are only counted.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from copyhunt.records import VERDICTS, Copy, Frame, Trace, is_eliminable
from copyhunt.text import display_path, human_bytes, short_op, visible
from copyhunt.view import TraceView, view

#: Longest string kept from a trace (a function name, a reason...); the rest is cut with a note.
MAX_TEXT = 2000
#: Most (stack, op, kind, verdict) entries shipped; the smallest beyond this are summed up in a note.
MAX_STACKS = 2000
#: Distinct modules / regions listed per entry (the count says how many there were).
MAX_NAMES = 8
#: Keys under which a copy record may carry its site's source text (the hardening track adds it).
SOURCE_TEXT_KEYS = ("source", "source_line", "site_source", "line_text")

# Frames inside torch (module call plumbing): the page can hide them. A display choice about a
# possibly foreign trace, so it reads the path's shape, not this machine's install (attribution does).
# Absolute (older traces) or as recorded now, by import path (``torch/nn/...``: copyhunt.text.display_path).
_TORCH_FRAME = re.compile(r"[\\/](?:site|dist)-packages[\\/]torch[\\/]|[\\/]torch[\\/]nn[\\/]modules[\\/]module\.py$|^torch[\\/]")


@dataclass(frozen=True)
class BenchAttachment:
    """What `copyhunt bench moe` left for the report: its JSON document and/or its PNG plot."""

    doc: Mapping[str, Any] | None = None
    png: bytes | None = None


# --- text and numbers from untrusted records ------------------------------------------------


def clean_text(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as display text: at most ``limit`` characters (plus a note), control characters visible."""
    s = value if isinstance(value, str) else str(value)
    if len(s) > limit:
        s = f"{s[:limit]}... ({len(s) - limit} more characters)"
    return visible(s)


def _opt_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return None if value is None or value == "" else clean_text(value, limit)


#: Bounds that keep sums finite and exact enough (a byte count past 2**62 or a copy that took
#: more than a day of device time is not a measurement).
MAX_SIZE = 2**62
MAX_TIME_US = 86_400e6


def _size(value: Any) -> int:
    """A byte count or line number: an int in [0, MAX_SIZE]; anything else (NaN, text, negative) is 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if 0 <= value <= MAX_SIZE else 0
    if isinstance(value, float) and 0 <= value <= MAX_SIZE:
        return int(value)
    return 0


def _time_us(copy: Copy) -> float | None:
    """The copy's device time in us, or None (no timing, or not a number in [0, MAX_TIME_US])."""
    t = getattr(copy.device, "time_us", None)
    if isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= MAX_TIME_US:
        return float(t)
    return None


# The record fields the page reads; the one place to adapt when records change shape.
def _verdict_of(copy: Copy) -> tuple[str | None, str | None, str | None]:
    """(verdict, reason, suggestion) of ``copy``."""
    # An empty reason or suggestion says nothing: shown as none.
    return copy.verdict, copy.reason or None, copy.suggestion or None


def _source_text(copy: Copy) -> str | None:
    """The site's source line when the trace itself carries one (never read from disk)."""
    stored = getattr(copy.site, "source_text", None)  # Frame.source_text, captured at trace time
    if isinstance(stored, str) and stored.strip():
        return clean_text(stored.strip(), 500)
    extra = copy.extra if isinstance(copy.extra, Mapping) else {}
    for key in SOURCE_TEXT_KEYS:
        value = extra.get(key)
        if isinstance(value, str) and value.strip():
            return clean_text(value.strip(), 500)
    return None


# --- folding copies into entries ---------------------------------------------------------------


class _Frames:
    """Distinct frames, numbered in order of first use: ``[short path, line, function, torch?, path]``."""

    def __init__(self, cwd: str | None) -> None:
        self.cwd = cwd
        self.rows: list[list[Any]] = []
        self._ids: dict[tuple[str, int, str], int] = {}
        self._by_frame: dict[Frame, int] = {}  # the same frame object recurs in every copy of a loop

    def id(self, frame: Frame) -> int:
        known = self._by_frame.get(frame)
        if known is not None:
            return known
        key = (clean_text(frame.file), _size(frame.line), clean_text(frame.function, 500))
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.rows)
            path = key[0]
            short = clean_text(display_path(path, self.cwd)) if isinstance(frame.file, str) else path
            self.rows.append([short, key[1], key[2], 1 if _TORCH_FRAME.search(path) else 0, path])
        self._by_frame[frame] = found
        return found


class _Entry:
    """Running totals of the copies that share one (stack, op, kind, verdict)."""

    def __init__(self, order: int, frames: list[int], site: int, op: str, kind: str, verdict: str | None) -> None:
        self.order = order
        self.frames, self.site, self.op, self.kind, self.verdict = frames, site, op, kind, verdict
        self.count = self.noop = self.bytes = self.elim = self.elim_bytes = 0
        self.us: float | None = None
        self.elim_us: float | None = None
        self.reason: str | None = None
        self.suggestion: str | None = None
        self.reasons: set[str] = set()
        self.modules: dict[str, None] = {}
        self.regions: dict[str, None] = {}
        self.source: str | None = None
        self.proof: list[str] | None = None  # [status, detail] of copyhunt verify's result, when re-run

    def add(self, copy: Copy, verdict: str | None, reason: Any, suggestion: Any) -> None:
        self.count += 1
        moved = 0 if copy.noop else _size(copy.bytes)
        self.noop += 1 if copy.noop else 0
        self.bytes += moved
        t = _time_us(copy)
        if t is not None:
            self.us = (self.us or 0.0) + t
        if is_eliminable(verdict):
            self.elim += 1
            self.elim_bytes += moved
            if t is not None:
                self.elim_us = (self.elim_us or 0.0) + t
        if reason is not None:
            self.reasons.add(reason if isinstance(reason, str) else repr(reason))
            if self.reason is None:
                self.reason, self.suggestion = clean_text(reason), _opt_text(suggestion)
        for names, value in ((self.modules, copy.module), (self.regions, copy.region)):
            if value is not None:  # raw here, cleaned when shipped (only the first MAX_NAMES are)
                names.setdefault(value if isinstance(value, str) else str(value), None)
        if self.source is None:
            self.source = _source_text(copy)
        v = copy.verification
        if self.proof is None and v is not None:
            self.proof = [clean_text(v.status, 50), clean_text(v.detail)]

    def to_json(self) -> dict[str, Any]:
        return {
            "f": self.frames, "s": self.site, "op": self.op, "kind": self.kind, "v": self.verdict,
            "n": self.count, "z": self.noop, "b": self.bytes, "t": self.us,
            "e": self.elim, "eb": self.elim_bytes, "et": self.elim_us,
            "r": self.reason, "g": self.suggestion, "rn": len(self.reasons),
            "m": [clean_text(m, 500) for m in list(self.modules)[:MAX_NAMES]], "mn": len(self.modules),
            "rg": [clean_text(r, 500) for r in list(self.regions)[:MAX_NAMES]], "rgn": len(self.regions), "src": self.source,
            "pf": self.proof,
        }


def _fold(copies: Iterable[Copy], frames: _Frames) -> list[_Entry]:
    """One entry per (stack outermost first, site, op, kind, verdict), in order of first copy."""
    entries: dict[tuple[Any, ...], _Entry] = {}
    names: dict[tuple[Any, ...], str] = {}  # op / kind / verdict text, cleaned once per distinct value

    def name(kind: str, value: Any, limit: int) -> str:
        key = (kind, value) if isinstance(value, str) else (kind, repr(value))
        text = names.get(key)
        if text is None:
            text = names[key] = clean_text(short_op(str(value)) if kind == "op" else value, limit)
        return text

    for copy in copies:
        stack = [f for f in (copy.stack or ()) if isinstance(f, Frame)]
        if not stack and isinstance(copy.site, Frame):
            stack = [copy.site]
        ids = [frames.id(f) for f in reversed(stack)]  # records keep the innermost frame first
        site = frames.id(copy.site) if isinstance(copy.site, Frame) else -1
        verdict, reason, suggestion = _verdict_of(copy)
        verdict = None if verdict is None or verdict == "" else name("verdict", verdict, 100)
        key = (tuple(ids), site, name("op", copy.op, 200), name("kind", copy.kind, 50), verdict)
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Entry(len(entries), ids, site, key[2], key[3], verdict)
        entry.add(copy, verdict, reason, suggestion)
    return list(entries.values())


# --- the page's data ---------------------------------------------------------------------------


def report_data(
    source: Trace | TraceView,
    *,
    trace_path: str | None = None,
    showing: Sequence[str] = (),
    bench: BenchAttachment | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready builtins (all trace text cleaned and bounded)."""
    shown_view = source if isinstance(source, TraceView) else view(source)
    frames = _Frames(cwd)
    entries = _fold(shown_view.copies, frames)
    entries.sort(key=lambda e: (-e.bytes, -e.count, e.order))
    shown, left = entries[:MAX_STACKS], entries[MAX_STACKS:]
    timed = any(e.us is not None for e in entries)
    judged = any(e.verdict is not None for e in entries)
    by_verdict: dict[str, list[Any]] = {}
    for e in entries:
        if e.verdict is not None:
            row = by_verdict.setdefault(e.verdict, [e.verdict, 0, 0, None])
            row[1] += e.count
            row[2] += e.bytes
            if e.us is not None:
                row[3] = (row[3] or 0.0) + e.us
    rank = {v: i for i, v in enumerate(VERDICTS)}
    totals = {
        "copies": sum(e.count for e in entries),
        "noop": sum(e.noop for e in entries),
        "bytes": sum(e.bytes for e in entries),
        "us": sum(e.us for e in entries if e.us is not None) if timed else None,
        "elim": sum(e.elim for e in entries),
        "elim_bytes": sum(e.elim_bytes for e in entries),
        "elim_us": sum(e.elim_us or 0.0 for e in entries) if timed else None,
        "by_verdict": sorted(by_verdict.values(), key=lambda r: (rank.get(r[0], len(rank)), r[0])),
        "left_out": {"stacks": len(left), "copies": sum(e.count for e in left), "bytes": sum(e.bytes for e in left)},
    }
    return {
        "format": "copyhunt.html/1",
        "meta": _meta(shown_view.trace, trace_path, showing),
        "verdicts": list(VERDICTS),
        "timed": timed,
        "judged": judged,
        "totals": totals,
        "frames": frames.rows,
        "stacks": [e.to_json() for e in shown],
        "bench": _bench_json(bench.doc) if bench is not None and bench.doc is not None else None,
        "plot": base64.b64encode(bench.png).decode("ascii") if bench is not None and bench.png else None,
        # The page checks its own byte formatter against these (one definition: units.human_bytes).
        "fmt_check": [[n, human_bytes(n)] for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30 + 2**29)],
    }


def _meta(trace: Trace, trace_path: str | None, showing: Sequence[str]) -> dict[str, Any]:
    meta = trace.meta
    gpu = meta.gpu_time_us
    # What chose the sites (focus / hide) and the view the trace asks to be shown with.
    filters: dict[str, Any] = {"focus": meta.focus, "hide": meta.hide}
    if isinstance(meta.view, Mapping):
        filters.update({f"view.{k}": v for k, v in meta.view.items()})
    return {
        "target": _opt_text(meta.target),
        "argv": [clean_text(a, 500) for a in list(meta.argv)[1:50]],
        "device": _opt_text(meta.device),
        "torch": _opt_text(meta.torch_version, 200),
        "copyhunt": _opt_text(meta.copyhunt_version, 200),
        "started": _opt_text(meta.started_at, 200),
        "duration_s": float(meta.duration_s) if isinstance(meta.duration_s, (int, float)) and math.isfinite(meta.duration_s) else None,
        "complete": meta.complete is True,  # anything but a plain true reads as incomplete
        "error": _opt_text(meta.error),
        "gpu_us": float(gpu) if isinstance(gpu, (int, float)) and math.isfinite(gpu) and gpu > 0 else None,
        "filters": [clean_text(f"{k}={_joined(v)}", 500) for k, v in sorted(filters.items(), key=lambda kv: str(kv[0])) if v not in (None, "", [], ())][:50],
        "showing": [clean_text(s, 500) for s in showing],
        "notes": [clean_text(n) for n in list(meta.notes)[:50]],
        "trace_file": _opt_text(trace_path),
    }


def _joined(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


#: Columns of a bench row the page shows (anything else in the file is ignored).
BENCH_COLUMNS = ("mode", "tokens", "baseline_us", "fixed_us", "saved_us", "spread_us", "ideal_us", "realized", "saved_pct", "fixed_not_slower")


def _bench_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The bench document's headline facts and rows, numbers finite, text cleaned."""
    config = doc.get("config") if isinstance(doc.get("config"), Mapping) else {}
    rows = doc.get("rows") if isinstance(doc.get("rows"), list) else []

    def cell(value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, (int, float)):
            return value if math.isfinite(value) else None
        return clean_text(value, 200)

    return {
        "schema": clean_text(doc.get("schema", ""), 200),
        "device": _opt_text(doc.get("device"), 200),
        "backend": _opt_text(doc.get("backend"), 200),
        "smoke": bool(doc.get("smoke")),
        "preset": _opt_text(config.get("preset"), 200),
        "layers": cell(config.get("layers")),
        "columns": list(BENCH_COLUMNS),
        "rows": [[cell(r.get(c)) for c in BENCH_COLUMNS] for r in rows[:500] if isinstance(r, Mapping)],
    }
