"""`copyhunt report FILE`: show a saved trace (or an imported profiler file) as `trace` did."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import typer

from copyhunt.analysis import read_trace
from copyhunt.cli import options
from copyhunt.cli.app import app
from copyhunt.cli.console import stdout_console
from copyhunt.errors import OutputExistsError
from copyhunt.report.json_out import render_json
from copyhunt.report.perfetto import write_perfetto
from copyhunt.report.table import render_table
from copyhunt.view import TraceView, recorded_selection, view



@dataclass(frozen=True)
class Export:
    """A file the report also writes from the view it shows (``--perfetto``; more formats add one each)."""

    flag: str
    path: Path
    write: Callable[[TraceView, Path], Path]  # returns the path written
    done: str  # what to say on stderr, with {path}


@app.command("report", help="Show a saved trace (copyhunt JSON, or a profiler file copyhunt can import).")
def report_command(
    file: Path = typer.Argument(..., metavar="FILE", show_default=False),
    json_output: bool = options.JSON,
    top: int = options.TOP,
    by: options.GroupBy = options.BY,
    kind: Optional[str] = options.KIND,
    region: Optional[str] = options.REGION,
    site: Optional[str] = options.SITE,
    op: Optional[str] = options.OP,
    perfetto: Optional[Path] = typer.Option(
        None, "--perfetto", metavar="OUT.json", help="Also write the copies as a Chrome/Perfetto timeline."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files (--perfetto)."),
) -> int:
    """Render FILE; exit 2 (one line) when it is missing, truncated, foreign or from a newer copyhunt."""
    selection = options.selection(kind, region, site, op)
    exports: list[Export] = []
    if perfetto is not None:
        exports.append(Export("--perfetto", perfetto, write_perfetto, "timeline written to {path} (open it in ui.perfetto.dev)"))
    for e in exports:  # refuse before reading anything
        if e.path.exists() and not force:
            raise OutputExistsError(f"{e.flag} {e.path}: file exists; pass --force to overwrite it")
    trace = read_trace(file)
    # No --kind / --region / --site / --op: the view the trace records (what `copyhunt trace` printed).
    shown = view(trace, recorded_selection(trace) if selection.everything else selection)
    for e in exports:
        print(f"copyhunt: {e.done.format(path=e.write(shown, e.path))}", file=sys.stderr)
    if json_output:
        # The whole document, as `trace --json` printed it; only the matching copies with a selection.
        render_json(trace if selection.everything else shown.to_trace(), stdout_console())
    else:
        render_table(shown, stdout_console(), by=by, top=top, trace_path=str(file))
    return 0
