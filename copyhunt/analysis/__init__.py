"""Analysis: records -> findings. Pure, deterministic functions; nothing here prints."""

from copyhunt.analysis.summary import EliminableSummary, eliminable_summary
from copyhunt.analysis.verdicts import judge

__all__ = ["judge", "eliminable_summary", "EliminableSummary"]
