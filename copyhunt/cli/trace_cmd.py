"""`copyhunt trace [TARGET] [-- ARGS...]`: run a program under the copy hunter, show and save its copies."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from copyhunt.cli import options
from copyhunt.cli.app import command
from copyhunt.cli.console import stdout_console
from copyhunt.cli.progress import progress_wanted
from copyhunt.cli.tracing import resolve_output, trace_target
from copyhunt.report.json_out import render_json
from copyhunt.report.table import render_table
from copyhunt.targets import DEFAULT_TARGET, parse_target
from copyhunt.text import display_path
from copyhunt.view import recorded_selection, view


@command(
    "trace",
    short_help="Run a program under the copy hunter; show and save its copies.",
    help=(
        "Run TARGET under the copy hunter; print a table of its copies and save the trace.\n\n"
        "TARGET is a script path, package.module:function (called with no arguments), or use "
        f"-m package.module. Without TARGET, runs the bundled MoE demo ({DEFAULT_TARGET}). "
        "Arguments after -- go to the program. --kind / --region / --site / --op choose what the table "
        "shows; the trace keeps every copy and records that view."
    ),
)
def trace_command(
    target: Optional[str] = typer.Argument(None, metavar="[TARGET]", show_default=False),
    args: Optional[List[str]] = typer.Argument(None, metavar="[-- ARGS...]", show_default=False),
    module: Optional[str] = typer.Option(None, "-m", "--module", metavar="MODULE", help="Run a module like python -m."),
    output: options.OptionalPath = options.OUTPUT,
    force: bool = options.FORCE,
    json_output: bool = options.JSON,
    top: int = options.TOP,
    by: options.GroupBy = options.BY,
    kind: Optional[str] = options.KIND,
    region: Optional[str] = options.REGION,
    site: Optional[str] = options.SITE,
    op: Optional[str] = options.OP,
    focus: options.Globs = options.FOCUS,
    hide: options.Globs = options.HIDE,
    device_trace: Optional[bool] = typer.Option(
        None,
        "--device-trace/--no-device-trace",
        help="Join GPU profiler events (device time per copy). Default: on when CUDA is available.",
        show_default=False,
    ),
    no_verdicts: bool = options.NO_VERDICTS,
    max_ops: Optional[int] = options.MAX_OPS,
    follow: bool = typer.Option(
        True,
        "--follow/--no-follow",
        help="Trace Python child processes (multiprocessing, subprocess python, torchrun ranks) into a run "
        "folder next to the trace (default); --no-follow only counts them in the notes.",
    ),
    eager: bool = typer.Option(
        False,
        "--eager",
        help="Run torch.compile'd code op by op, as if it were not compiled (default: it stays compiled "
        "and the copies Inductor kept are recorded).",
    ),
) -> int:
    """Trace a target; exit 0, or 3 if it raised (130 on Ctrl-C) with the partial trace saved."""
    selection = options.selection(kind, region, site, op)
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
        compiled="eager" if eager else "compiled",
        verdicts=not no_verdicts,
        max_ops=max_ops,
        progress=progress_wanted(json_output=json_output, stream=sys.stderr),
        follow=follow,
    )
    if run.trace.meta.pending:
        return run.exit_code  # Ctrl-C stopped the analysis: the saved file is what the user keeps (said on stderr)
    if run.trace.meta.children:
        # Children were followed: the merged view of the run (parent and children), as `report` shows it.
        from copyhunt.cli.runs import show_run

        show_run([run.path], json_output=json_output, top=top, selection=selection)
        if json_output:
            print(f"copyhunt: trace saved to {run.path}", file=sys.stderr)
        return run.exit_code
    if json_output:
        render_json(run.trace, stdout_console())
        print(f"copyhunt: trace saved to {display_path(str(run.path))}", file=sys.stderr)
    else:
        # The view the trace records: `copyhunt report FILE` prints exactly this.
        shown = view(run.trace, recorded_selection(run.trace))
        render_table(shown, stdout_console(), by=by, top=top, trace_path=str(run.path))
        if run.exit_code == 0:  # after a failure its traceback stays the last thing said
            print(next_steps(display_path(str(run.path))), file=sys.stderr)
    return run.exit_code


def next_steps(path: object) -> str:
    """The one line after a trace that says what to do with it."""
    return (f"copyhunt: next: `copyhunt report {path} --html report.html` to browse it, "
            f"`copyhunt diff OLD.json {path}` to compare, `copyhunt gate {path}` to check a budget")

