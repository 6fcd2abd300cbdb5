"""`copyhunt report FILE`: show a saved trace (or an imported profiler file) as `trace` did."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from copyhunt.analysis.grouping import select_copies
from copyhunt.cli.app import app
from copyhunt.cli.console import stdout_console
from copyhunt.cli.trace_cmd import BY_OPTION, JSON_OPTION, KIND_OPTION, REGION_OPTION, TOP_OPTION, GroupBy
from copyhunt.cli.tracing import parse_kinds
from copyhunt.errors import OutputExistsError
from copyhunt.importers import load_any
from copyhunt.report.html import check_output, read_bench, render_html, write_html
from copyhunt.report.json_out import render_json
from copyhunt.report.perfetto import write_perfetto
from copyhunt.report.table import render_table


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
    html: Optional[Path] = typer.Option(
        None, "--html", metavar="OUT.html", help="Also write a self-contained HTML report (call tree, flame graph, sites)."
    ),
    bench: Optional[list[Path]] = typer.Option(
        None, "--bench", metavar="FILE", help="With --html: embed `copyhunt bench moe` output (its --json file and/or --plot PNG)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --perfetto / --html file."),
) -> int:
    """Render FILE; exit 2 (one line) when it is missing, truncated, foreign or from a newer copyhunt."""
    kinds = parse_kinds(kind)
    if perfetto is not None and perfetto.exists() and not force:
        raise OutputExistsError(f"--perfetto {perfetto}: file exists; pass --force to overwrite it")
    if bench and html is None:
        raise typer.BadParameter("--bench goes with --html (it adds the benchmark to the HTML report)", param_hint="--bench")
    if html is not None:
        check_output(html, force)
    attachment = read_bench(bench) if bench else None
    trace = load_any(file)
    if kinds is not None or region is not None:
        selected = trace.with_copies(select_copies(trace.copies, kinds=kinds, region=region))
    else:
        selected = trace
    if perfetto is not None:
        written = write_perfetto(selected, perfetto)
        print(f"copyhunt: timeline written to {written} (open it in ui.perfetto.dev)", file=sys.stderr)
    if html is not None:
        showing = ([f"kind={','.join(kinds)}"] if kinds is not None else []) + ([f"region={region}"] if region is not None else [])
        page = render_html(selected, trace_path=str(file), showing=showing, bench=attachment)
        print(f"copyhunt: HTML report written to {write_html(page, html, force=force)}", file=sys.stderr)
    if json_output:
        render_json(selected, stdout_console())
    else:
        render_table(trace, stdout_console(), by=by.value, top=top, kinds=kinds, region=region, trace_path=str(file))
    return 0
