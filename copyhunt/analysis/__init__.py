"""Analysis: records -> findings. Pure, deterministic functions; nothing here prints."""

from copyhunt.analysis.verdicts import judge

__all__ = ["judge"]
