"""``--json``: the trace document itself, exactly what the trace file holds."""

from __future__ import annotations

from rich.console import Console

from copyhunt.records import Trace
from copyhunt.tracefile import dumps


def render_json(trace: Trace, console: Console) -> None:
    """Write the trace document (``copyhunt.tracefile``) as one JSON line to the console's file."""
    # Straight to the file: rich would wrap, highlight or re-indent the text, and is slow on big traces.
    console.file.write(dumps(trace) + "\n")
    console.file.flush()
