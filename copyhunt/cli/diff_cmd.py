"""`copyhunt diff A B`: sites added, removed and changed between two traces."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from copyhunt.cli import options
from copyhunt.cli.app import command
from copyhunt.cli.console import console_for
from copyhunt.errors import EXIT_OK, EXIT_VIOLATION
from copyhunt.report import Format


@command("diff", short_help="Sites added, removed and changed between two traces.")
def diff(
    a: Path = typer.Argument(..., metavar="A", help="The trace before (e.g. a stored baseline); a run folder compares every process's copies together."),
    b: Path = typer.Argument(..., metavar="B", help="The trace after (a run folder too)."),
    rank: Optional[int] = options.RANK,
    fmt: Format = options.FORMAT,
    json_output: bool = options.JSON_FORMAT,
    fail_on_increase: bool = typer.Option(False, "--fail-on-increase", help="Exit 1 when any site has more copies or bytes in B."),
    show_same: bool = typer.Option(False, "--all", help="Also list the sites that did not change."),
    kind: Optional[str] = options.KIND,
    region: Optional[str] = options.REGION,
    site: Optional[str] = options.SITE,
    op: Optional[str] = options.OP,
) -> int:
    """Compare two traces per site (file, line, function, op, kind): count, bytes, device time."""
    from copyhunt.analysis.diff import diff_traces
    from copyhunt.report.diff_report import render_diff
    from copyhunt.view import view

    from copyhunt.cli.runs import run_trace

    if json_output:
        fmt = options.json_format(fmt)
    selection = options.selection(kind, region, site, op)
    ta, tb = (run_trace([p], rank)[0] for p in (a, b))
    result = diff_traces(view(ta, selection), view(tb, selection))
    render_diff(console_for(fmt), result, fmt, a=str(a), b=str(b), show_same=show_same, fail_on_increase=fail_on_increase)
    return EXIT_VIOLATION if fail_on_increase and result.grown else EXIT_OK
