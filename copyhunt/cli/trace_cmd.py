"""`copyhunt trace [TARGET] [-- ARGS...]`: run a program under the copy hunter, show and save its copies."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from copyhunt.cli.app import app
from copyhunt.cli.console import stdout_console
from copyhunt.cli.tracing import parse_selection, resolve_output, trace_target
from copyhunt.report.json_out import render_json
from copyhunt.report.table import DEFAULT_TOP, render_table
from copyhunt.targets import DEFAULT_TARGET, parse_target
from copyhunt.view import recorded_selection, view


class GroupBy(str, Enum):
    """What one table row stands for (`--by`)."""

    site = "site"
    module = "module"
    region = "region"


# Display options shared with `copyhunt report` (it imports these).
TOP_OPTION = typer.Option(DEFAULT_TOP, "--top", min=0, metavar="N", help="Show the N largest rows (0: all).")
BY_OPTION = typer.Option(GroupBy.site, "--by", help="One row per source site, nn.Module path or region.")
KIND_OPTION = typer.Option(
    None, "--kind", metavar="KINDS", help="Only these copy kinds, comma-separated: d2d,h2d,d2h,p2p."
)
REGION_OPTION = typer.Option(None, "--region", metavar="NAME", help="Only copies inside region NAME (any nesting level).")
JSON_OPTION = typer.Option(False, "--json", help="Print the trace document (JSON) on stdout and nothing else.")


@app.command(
    "trace",
    help=(
        "Run TARGET under the copy hunter; print a table of its copies and save the trace.\n\n"
        "TARGET is a script path, package.module:function (called with no arguments), or use "
        f"-m package.module. Without TARGET, runs the bundled MoE demo ({DEFAULT_TARGET}). "
        "Arguments after -- go to the program."
    ),
)
def trace_command(
    target: Optional[str] = typer.Argument(None, metavar="TARGET", show_default=False),
    args: Optional[List[str]] = typer.Argument(None, metavar="ARGS", show_default=False),
    module: Optional[str] = typer.Option(None, "-m", "--module", metavar="MODULE", help="Run a module like python -m."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Save the trace here (default: ./copyhunt-<target>.<pid>.json)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file."),
    json_output: bool = JSON_OPTION,
    top: int = TOP_OPTION,
    by: GroupBy = BY_OPTION,
    kind: Optional[str] = KIND_OPTION,
    region: Optional[str] = REGION_OPTION,
    focus: Optional[List[str]] = typer.Option(
        None, "--focus", metavar="GLOB", help="Attribute copies to the first frame matching GLOB (repeatable)."
    ),
    hide: Optional[List[str]] = typer.Option(
        None, "--hide", metavar="GLOB", help="Never attribute copies to frames matching GLOB (repeatable)."
    ),
    device_trace: Optional[bool] = typer.Option(
        None,
        "--device-trace/--no-device-trace",
        help="Join GPU profiler events (device time per copy). Default: on when CUDA is available.",
        show_default=False,
    ),
) -> int:
    """Trace a target; exit 0, or 3 if it raised (130 on Ctrl-C) with the partial trace saved."""
    selection = parse_selection(kind, region)
    parsed = parse_target(target, module, args or ())
    path = resolve_output(output, parsed, force)
    run = trace_target(
        parsed,
        path,
        force=force,
        selection=selection,
        focus=focus or (),
        hide=hide or (),
        device_trace=device_trace,
        stdout_to_stderr=json_output,
    )
    if json_output:
        render_json(run.trace, stdout_console())
        print(f"copyhunt: trace saved to {run.path}", file=sys.stderr)
    else:
        # The view the trace records (--kind / --region): `copyhunt report FILE` prints exactly this.
        render_table(view(run.trace, recorded_selection(run.trace)), stdout_console(), by=by.value, top=top, trace_path=str(run.path))
    return run.exit_code
