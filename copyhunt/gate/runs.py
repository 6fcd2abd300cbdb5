"""Gating a run of several processes (a run folder): rules over the whole run, or over each process.

A rule with ``per = "rank"`` is checked against every process's trace on its own (each rank of a
torchrun job, each child) and its name carries the process label (``rank1: clones``); the other
rules count every process's copies together (``copyhunt.analysis.runs.combined_trace``). The baseline
comparison, when asked, is over the whole run.
"""

from __future__ import annotations

import os
from dataclasses import replace

from copyhunt.analysis.runs import Run, combined_trace
from copyhunt.gate.budget import Budget
from copyhunt.gate.check import GateResult, check, merge
from copyhunt.records import Trace


def evaluate_run(
    run: Run,
    budget: Budget | None,
    baseline: Trace | None = None,
    fail_on_increase: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> GateResult:
    """``copyhunt.gate.evaluate`` over a run: ``per = "run"`` rules on all copies, ``per = "rank"`` rules per process."""
    import copyhunt.gate  # the package's evaluate: the one entry point (tests replace it there)

    evaluate = copyhunt.gate.evaluate
    whole = combined_trace(run) if not run.is_single else run.members[0].trace
    if budget is None:
        return evaluate(whole, None, baseline, fail_on_increase, root)
    per_rank = tuple(r for r in budget.rules if r.per == "rank")
    total = replace(budget, rules=tuple(r for r in budget.rules if r.per != "rank"))
    result = evaluate(whole, total, baseline, fail_on_increase, root)
    if not per_rank:
        return result
    rules = list(result.rules)
    violations = []
    notes = list(result.notes)
    for m in run.members:
        named = replace(budget, rules=tuple(replace(r, name=f"{m.label}: {r.name}") for r in per_rank))
        one = check(m.trace, named, root)
        rules.extend(one.rules)
        violations.extend(one.violations)
        # The whole run's note already names an incomplete process; other notes say which process.
        notes.extend(f"{m.label}: {n}" for n in one.notes
                     if not n.startswith("the trace is incomplete") and f"{m.label}: {n}" not in notes)
    merged = merge(result, violations)
    return replace(merged, rules=tuple(rules), notes=tuple(notes))
