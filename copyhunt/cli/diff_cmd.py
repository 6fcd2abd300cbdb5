"""`copyhunt diff A B`: sites added, removed and changed between two traces."""

from __future__ import annotations

from pathlib import Path

import typer

from copyhunt.cli.app import app
from copyhunt.cli.gate_cmd import check_format, console_for
from copyhunt.errors import EXIT_OK, EXIT_VIOLATION


@app.command("diff")
def diff(
    a: Path = typer.Argument(..., metavar="A", help="The trace before (e.g. a stored baseline)."),
    b: Path = typer.Argument(..., metavar="B", help="The trace after."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or github (annotations on the lines that grew)."),
    fail_on_increase: bool = typer.Option(False, "--fail-on-increase", help="Exit 1 when any site has more copies or bytes in B."),
    show_same: bool = typer.Option(False, "--all", help="Also list the sites that did not change."),
) -> int:
    """Compare two traces per site (file, line, function, op, kind): count, bytes, device time."""
    from copyhunt.analysis import ensure_judged
    from copyhunt.analysis.diff import diff_traces
    from copyhunt.view import view
    from copyhunt.importers import load_any
    from copyhunt.report.diff_report import render_diff_github, render_diff_json, render_diff_text

    check_format(fmt)
    before, after = ensure_judged(load_any(a)), ensure_judged(load_any(b))
    result = diff_traces(view(before), view(after))
    console = console_for(fmt)
    if fmt == "text":
        render_diff_text(console, result, a=str(a), b=str(b), show_same=show_same)
    elif fmt == "json":
        render_diff_json(console, result, a=str(a), b=str(b), show_same=show_same)
    else:
        render_diff_github(console, result, a=str(a), b=str(b), level="error" if fail_on_increase else "warning")
    return EXIT_VIOLATION if fail_on_increase and result.grown else EXIT_OK
