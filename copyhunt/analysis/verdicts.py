"""Copy verdicts (issue "Copy verdicts"): placeholder that leaves the trace unjudged until it lands."""

from __future__ import annotations

from copyhunt.records import Trace


def judge(trace: Trace) -> Trace:
    """Return ``trace`` with a verdict on every copy (placeholder: unchanged)."""
    return trace
