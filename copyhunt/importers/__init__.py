"""Readers for trace files: copyhunt's own, and foreign profiler output (Chrome trace, rocprofv3)."""

from __future__ import annotations

import os

from copyhunt.records import Trace, load


def load_any(path: str | os.PathLike[str]) -> Trace:
    """Load a copyhunt trace, or import a foreign profiler file into the same records."""
    return load(path)
