"""Copy verdicts: run the rule registry over every copy of a trace (issue 5).

``judge(trace)`` returns a new trace whose every copy carries ``findings`` (strongest first,
``records.VERDICTS`` order), ``verdict`` / ``reason`` / ``suggestion`` of the strongest, and
"needed" when no rule could prove the copy eliminable. Pure and deterministic: the same trace
always gives the same verdicts, and judging a judged trace changes nothing.
"""

from __future__ import annotations

import gc
from dataclasses import replace

from copyhunt.analysis import copy_rules as _builtin_rules  # noqa: F401  (registers the rules)
from copyhunt.analysis.index import TraceIndex
from copyhunt.analysis.rules import run_rules
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
    # The index is hundreds of thousands of small tuples on big traces, none of them cyclic: the
    # cyclic GC would rescan them again and again while they are made (3x the build time measured
    # at 100k ops). Pause it for the duration, and restore whatever state the caller had.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _judge(trace)
    finally:
        if was_enabled:
            gc.enable()


def _judge(trace: Trace) -> Trace:
    ctx = TraceIndex(trace)
    judged: dict[int, tuple[Finding, ...]] = {}  # dispatch copies by seq, for their graph replays
    out: list[CopyRecord] = []
    for copy in trace.copies:
        if copy.origin == "dispatch":
            found = run_rules(copy, ctx)
            # Eliminable findings win; else the first rule's explanation of why the copy stays.
            findings = tuple(f for f in found if f.verdict != "needed") or found[:1] or (_needed(copy, ctx),)
            judged.setdefault(copy.seq, findings)
        else:
            # "device", "imported" (and replays, until matched below) have no op records of their
            # own: judging them from the ops around them would be guessing.
            findings = (NO_OPS,)
        out.append(_with(copy, findings))
    # A graph replay re-runs the very copy recorded at capture time: it shares that copy's verdict.
    for i, copy in enumerate(out):
        if copy.origin == "graph-replay" and copy.seq in judged:
            capture = judged[copy.seq]
            out[i] = _with(copy, tuple(replace(f, reason=f"{f.reason} (as at capture, #{copy.seq})") for f in capture))
    return trace.with_copies(out)


def _needed(copy: CopyRecord, ctx: TraceIndex) -> Finding:
    """Why a dispatch copy no rule could judge is needed."""
    if ctx.op(copy.seq) is None:
        return NO_OPS
    return IN_GRAPH if ctx.unseen_graph_access(copy) else NO_RULE


def _with(copy: CopyRecord, findings: tuple[Finding, ...]) -> CopyRecord:
    """The copy record with its findings and the strongest one spelled out."""
    top = findings[0]
    return replace(copy, findings=findings, verdict=top.verdict, reason=top.reason, suggestion=top.suggestion)
