"""Analysis: records -> findings. Pure, deterministic functions; nothing here prints."""

from copyhunt.analysis.summary import EliminableSummary, eliminable_summary
from copyhunt.analysis.verdicts import ensure_judged, judge

__all__ = ["judge", "ensure_judged", "eliminable_summary", "EliminableSummary"]
