"""`copyhunt report FILE`: show a saved trace (or an imported profiler file) as `trace` did."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from copyhunt.cli.app import app
from copyhunt.cli.console import stdout_console
from copyhunt.cli.trace_cmd import BY_OPTION, JSON_OPTION, KIND_OPTION, REGION_OPTION, TOP_OPTION, GroupBy
from copyhunt.cli.tracing import parse_selection
from copyhunt.errors import OutputExistsError
from copyhunt.analysis import ensure_judged
from copyhunt.importers import load_any
from copyhunt.report.json_out import render_json
from copyhunt.report.perfetto import write_perfetto
from copyhunt.report.table import render_table
from copyhunt.view import recorded_selection, view


@app.command("report", help="Show a saved trace (copyhunt JSON, or a profiler file copyhunt can import).")
def report_command(
    file: Path = typer.Argument(..., metavar="FILE", show_default=False),
    json_output: bool = JSON_OPTION,
    top: int = TOP_OPTION,
    by: GroupBy = BY_OPTION,
    kind: Optional[str] = KIND_OPTION,
    region: Optional[str] = REGION_OPTION,
    perfetto: Optional[Path] = typer.Option(
        None, "--perfetto", metavar="OUT.json", help="Also write the copies as a Chrome/Perfetto timeline."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --perfetto file."),
) -> int:
    """Render FILE; exit 2 (one line) when it is missing, truncated, foreign or from a newer copyhunt."""
    selection = parse_selection(kind, region)
    if perfetto is not None and perfetto.exists() and not force:
        raise OutputExistsError(f"--perfetto {perfetto}: file exists; pass --force to overwrite it")
    trace = ensure_judged(load_any(file))
    # No --kind / --region: the view the trace records (what `copyhunt trace` printed).
    shown = view(trace, recorded_selection(trace) if selection.everything else selection)
    if perfetto is not None:
        written = write_perfetto(shown, perfetto)
        print(f"copyhunt: timeline written to {written} (open it in ui.perfetto.dev)", file=sys.stderr)
    if json_output:
        # The whole document, as `trace --json` printed it; only the matching copies with --kind / --region.
        render_json(trace if selection.everything else shown.to_trace(), stdout_console())
    else:
        render_table(shown, stdout_console(), by=by.value, top=top, trace_path=str(file))
    return 0
