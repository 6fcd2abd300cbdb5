"""`copyhunt gate`: check a trace (or a fresh run) against a copy budget; exit 1 when over it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from copyhunt.cli.app import app
from copyhunt.cli.console import stdout_console
from copyhunt.errors import EXIT_OK, EXIT_VIOLATION, BudgetError

FORMATS = ("text", "json", "github")


def console_for(fmt: str) -> Console:
    """stdout console; JSON and GitHub output are plain text that must never wrap or carry colour."""
    if fmt == "text":
        return stdout_console(file=sys.stdout)
    return stdout_console(file=sys.stdout, no_color=True, force_terminal=False, width=10_000, soft_wrap=True)


def check_format(fmt: str) -> str:
    """Validate ``--format`` (a usage error, exit 2)."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
    return fmt


@app.command("gate")
def gate(
    paths: Optional[List[str]] = typer.Argument(
        None, metavar="[TRACE] [-- ARGS...]", help="Trace file to check; with --run, the target's arguments (after --)."
    ),
    budget: Optional[Path] = typer.Option(
        None, "--budget", "-b", help="Budget file (copyhunt.toml or pyproject.toml). Default: ./copyhunt.toml, else ./pyproject.toml \\[tool.copyhunt]."
    ),
    run: Optional[str] = typer.Option(
        None, "--run", metavar="TARGET", help="Trace TARGET first (script, -m module, module:function), then gate that trace."
    ),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or github (::error annotations on the offending lines)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="A stored trace to compare with, site by site."),
    fail_on_increase: bool = typer.Option(False, "--fail-on-increase", help="With --baseline: fail when any site has more copies or bytes."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="With --run: where to save the trace."),
    force: bool = typer.Option(False, "--force", help="With --run: overwrite --output if it exists."),
    focus: Optional[List[str]] = typer.Option(
        None, "--focus", metavar="GLOB", help="With --run: attribute copies to the first frame matching GLOB (repeatable)."
    ),
    hide: Optional[List[str]] = typer.Option(
        None, "--hide", metavar="GLOB", help="With --run: never attribute copies to frames matching GLOB (repeatable)."
    ),
) -> int:
    """Check copies against a budget: exit 0 within it, 1 over it (or grown), 2 on bad input."""
    from copyhunt.gate import evaluate, find_budget, load_budget
    from copyhunt.importers import load_any
    from copyhunt.report.gate_report import render_gate

    check_format(fmt)
    args = list(paths or [])
    if fail_on_increase and baseline is None:
        raise typer.BadParameter("needs --baseline TRACE to compare with", param_hint="--fail-on-increase")
    if run is None:
        if len(args) != 1:
            raise typer.BadParameter(
                "give exactly one TRACE file, or --run TARGET [-- ARGS...]" if not args else f"one TRACE file expected, got {len(args)}: {' '.join(args)}",
                param_hint="TRACE",
            )
        if output is not None or force or focus or hide:
            raise typer.BadParameter("only with --run", param_hint="--output/--force/--focus/--hide")
    # Resolve and parse the budget BEFORE running anything: a typo must not cost a whole run.
    budget_path = budget if budget is not None else find_budget()
    rules = load_budget(budget_path) if budget_path is not None else None
    if rules is None and baseline is None:
        raise BudgetError("no budget: pass --budget FILE, add ./copyhunt.toml or [tool.copyhunt] to ./pyproject.toml, or compare with --baseline")
    base_trace = load_any(baseline) if baseline is not None else None

    if run is None:
        trace_label = args[0]
        trace = load_any(args[0])
    else:
        from copyhunt.cli.tracing import resolve_output, trace_target
        from copyhunt.targets import parse_target

        # "-m package.module" (quoted) runs a module, as `copyhunt trace -m` does.
        module = run[3:].strip() if run.startswith("-m ") else None
        target = parse_target(None if module else run, module, args)
        path = resolve_output(output, target, force)
        # JSON / GitHub output own stdout: the program's prints go to stderr.
        traced = trace_target(target, path, force=force, focus=focus or (), hide=hide or (), stdout_to_stderr=fmt != "text")
        print(f"copyhunt: trace saved to {traced.path}", file=sys.stderr)
        if traced.exit_code != EXIT_OK:
            return traced.exit_code  # the target raised (3) or was interrupted (130): no verdict on half a run
        trace, trace_label = traced.trace, str(traced.path)

    result = evaluate(trace, rules, base_trace, fail_on_increase)
    render_gate(
        console_for(fmt),
        result,
        fmt,
        trace=trace_label,
        budget=None if budget_path is None else str(budget_path),
        baseline=None if baseline is None else str(baseline),
    )
    return EXIT_OK if result.ok else EXIT_VIOLATION
