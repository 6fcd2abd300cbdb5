"""Analysis: records -> findings. Pure, deterministic functions; nothing here prints."""

from __future__ import annotations

import os

from copyhunt.analysis.summary import EliminableSummary, eliminable_summary
from copyhunt.analysis.verdicts import ensure_judged, judge
from copyhunt.records import Trace

__all__ = ["judge", "ensure_judged", "read_trace", "eliminable_summary", "EliminableSummary"]


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """A trace file (copyhunt's own, or a profiler file copyhunt imports) as every reader sees it: judged when it can be."""
    from copyhunt.importers import load_any

    return ensure_judged(load_any(path))
