"""Verdicts on a ring-mode trace (``--max-ops N``): judged as if the hunt had started at its first kept op.

Ring mode keeps every copy but only the newest N op records. A copy made before the first kept op
has lost the history its verdict rests on: it gets a conservative "needed" finding, never an
eliminable one. The copies after it are judged over the kept ops alone, which is what a hunt started
at that op would have recorded: storages made before it read as pre-existing (never "fresh"), and
copies made before it are left out of the judged set, so no round trip or chain is paired across the
dropped history. Every rule only ever concludes "eliminable" from ops it saw, so this is sound.
"""

from __future__ import annotations

from dataclasses import replace

from copyhunt.records import Finding, Trace


def history_dropped(max_ops: int | None) -> Finding:
    """The finding of a copy whose op history ring mode dropped."""
    limit = f" (--max-ops {max_ops} kept the newest {max_ops} op records)" if max_ops else ""
    return Finding(
        "needed",
        f"its op history was dropped{limit}: not judged",
        "trace a shorter run, or raise --max-ops, to judge it",
    )


def judge_window(trace: Trace) -> Trace:
    """``trace`` (ring mode: ``meta.ops_dropped`` > 0) with verdicts; see the module doc."""
    from copyhunt.analysis.verdicts import judge

    start = min((o.seq for o in trace.ops), default=None)
    inside = [
        i for i, c in enumerate(trace.copies)
        if c.origin != "dispatch" or (start is not None and c.seq >= start)
    ]
    sub = replace(
        trace,
        meta=replace(trace.meta, ops_complete=True),
        copies=tuple(trace.copies[i] for i in inside),
        timings={},
        findings=None,
        verifications={},
    )
    judged = judge(sub).findings or {}
    dropped = (history_dropped(trace.meta.max_ops),)
    findings = {i: dropped for i in range(len(trace.copies))}
    for j, i in enumerate(inside):
        findings[i] = judged.get(j, dropped)
    return replace(trace, findings=findings)
