"""Copy verdicts: run the rule registry over every copy of a trace (issue 5).

``judge(trace)`` returns a new trace with ``findings`` for every copy (strongest first,
``records.VERDICTS`` order; "needed" when no rule could prove the copy eliminable), kept beside the
copies by position. Pure and deterministic: the same trace always gives the same verdicts, and
judging a judged trace changes nothing. ``ensure_judged`` is the step every reader runs: it judges a
trace that lacks verdicts when its op records allow it (a full hunt, not an imported profiler file).
"""

from __future__ import annotations

from dataclasses import replace

from copyhunt.analysis import copy_rules as _builtin_rules  # noqa: F401  (registers the rules)
from copyhunt.analysis.compiled_rules import compiled_finding
from copyhunt.analysis.index import TraceIndex
from copyhunt.analysis.rules import run_rules
from copyhunt.gc_pause import no_cyclic_gc
from copyhunt.records import CopyRecord, Finding, Trace

NO_RULE = Finding("needed", "none of the rules applied", "keep it")
IN_GRAPH = Finding(
    "needed",
    "a CUDA graph may read or write its buffers unseen (replays leave no op records)",
    "keep it; trace the same code without graph replays to judge it",
)
NO_OPS = Finding(
    "needed",
    "no op records for this copy",
    "trace it with copyhunt's dispatch capture (copyhunt trace / copyhunt.hunt) to judge it",
)


def judge(trace: Trace) -> Trace:
    """Return ``trace`` with a verdict, a one-line reason and a suggestion on every copy."""
    # The index is hundreds of thousands of small tuples on big traces, none of them cyclic.
    with no_cyclic_gc():
        return _judge(trace)


def _judge(trace: Trace) -> Trace:
    ctx = TraceIndex(trace)
    judged: dict[int, tuple[Finding, ...]] = {}  # dispatch copies by seq, for their graph replays
    findings: dict[int, tuple[Finding, ...]] = {}  # by copy position
    for i, copy in enumerate(trace.copies):
        if copy.origin == "dispatch":
            found = run_rules(copy, ctx)
            # Eliminable findings win; else the first rule's explanation of why the copy stays.
            findings[i] = tuple(f for f in found if f.verdict != "needed") or found[:1] or (_needed(copy, ctx),)
            judged.setdefault(copy.seq, findings[i])
        elif copy.origin == "compiled":
            findings[i] = (compiled_finding(copy),)
        else:
            # "device", "imported" (and replays, until matched below) have no op records of their
            # own: judging them from the ops around them would be guessing.
            findings[i] = (NO_OPS,)
    # A graph replay re-runs the very copy recorded at capture time: it shares that copy's verdict.
    for i, copy in enumerate(trace.copies):
        if copy.origin == "graph-replay" and copy.seq in judged:
            capture = judged[copy.seq]
            findings[i] = tuple(replace(f, reason=f"{f.reason} (as at capture, #{copy.seq})") for f in capture)
    return replace(trace, findings=findings)


def _needed(copy: CopyRecord, ctx: TraceIndex) -> Finding:
    """Why a dispatch copy no rule could judge is needed."""
    if ctx.op(copy.seq) is None:
        return NO_OPS
    return IN_GRAPH if ctx.unseen_graph_access(copy) else NO_RULE


def ensure_judged(trace: Trace) -> Trace:
    """``trace`` with verdicts: judged now when it lacks them and its op records allow it.

    Every reader runs this (the API's ``h.copies``, ``report``, ``gate``, ``diff``), so a trace saved
    without verdicts (``copyhunt.save_trace(h.trace)``) reads with them. A trace whose ops were not
    all recorded (an imported profiler file, ``record_ops=False``) stays unjudged: its copies would
    look eliminable for want of evidence. If the analysis itself fails, the trace comes back
    unjudged with a note saying so: a bug of ours must not cost the reader the trace.
    """
    windowed = trace.meta.ops_dropped > 0 and bool(trace.ops)  # ring mode (--max-ops): analysis/window.py
    if trace.judged or not (trace.meta.ops_complete or windowed):
        return trace
    try:
        if windowed:
            from copyhunt.analysis.window import judge_window

            return judge_window(trace)
        return judge(trace)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        note = f"verdict analysis failed ({type(exc).__name__}: {exc}); the trace has no verdicts"
        return replace(trace, meta=replace(trace.meta, notes=(*trace.meta.notes, note)))
