"""Reading several traces as one run (a run folder, a trace with children, several files): shared by
``report``, ``diff``, ``gate`` and ``trace`` (docs/multiprocess.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from copyhunt.analysis.runs import Run, load_run, merge_run
from copyhunt.cli.console import stdout_console
from copyhunt.records import Trace
from copyhunt.selection import Selection
from copyhunt.view import view


def is_run(paths: Sequence[Path]) -> bool:
    """True when ``paths`` name more than one plain trace file: a folder, several files."""
    return len(paths) > 1 or any(Path(p).is_dir() for p in paths)


def read_run(paths: Sequence[Path]) -> Run:
    """The run ``paths`` name (TraceFormatError, one line, when a file is not a trace)."""
    return load_run(list(paths))


def show_run(paths: Sequence[Path], *, json_output: bool, top: int, selection: Selection) -> Run:
    """Print the merged table (or its JSON document) of the run ``paths`` name."""
    from copyhunt.report.runs_table import render_run_json, render_run_table

    run = read_run(paths)
    views = [view(m.trace, None if selection.everything else selection) for m in run.members]
    merged = merge_run(run, views)
    if json_output:
        render_run_json(merged, stdout_console())
    else:
        render_run_table(merged, stdout_console(), top=top)
    return run


def run_trace(paths: Sequence[Path], rank: int | None) -> tuple[Trace, str]:
    """One trace for ``diff`` / ``gate``: the rank ``--rank`` names, else every process's copies together."""
    from copyhunt.analysis.runs import pick

    run = read_run(paths)
    label = run.source if rank is None else f"{run.source} (rank {rank})"
    return pick(run, rank), label
