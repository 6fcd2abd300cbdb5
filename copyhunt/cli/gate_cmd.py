"""`copyhunt gate`: check a trace (or a fresh run) against a copy budget; exit 1 when over it.

Four steps: check the arguments (and read the budget) before anything runs, get the trace (load it,
or run the target), compare (``copyhunt.gate.evaluate``), render.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import typer

from copyhunt.cli import options
from copyhunt.cli.app import command
from copyhunt.cli.console import console_for
from copyhunt.errors import EXIT_OK, EXIT_VIOLATION, BudgetError, IncompleteTraceError
from copyhunt.report import Format
from copyhunt.text import display_path

if TYPE_CHECKING:
    from copyhunt.cli.tracing import TraceRun
    from copyhunt.gate.budget import Budget


@dataclass(frozen=True)
class _GateArgs:
    """The checked arguments: what to gate, against what."""

    trace_file: str | None  # None with --run
    budget_path: Path | None
    budget: "Budget | None"
    baseline: Path | None


@command("gate", short_help="Check copies against a budget (exit 1 over it).")
def gate(
    paths: Optional[List[str]] = typer.Argument(
        None, metavar="[TRACE] [-- ARGS...]", help="Trace file to check; with --run, the target's arguments (after --)."
    ),
    budget: Optional[Path] = typer.Option(
        None, "--budget", "-b", metavar="FILE", help="Budget file (copyhunt.toml or pyproject.toml). Default: the nearest copyhunt.toml, or pyproject.toml with [tool.copyhunt], in this directory or a parent."
    ),
    run: Optional[str] = typer.Option(
        None, "--run", metavar="TARGET", help="Trace TARGET first (script, -m module, module:function), then gate that trace."
    ),
    fmt: Format = options.FORMAT,
    json_output: bool = options.JSON_FORMAT,
    baseline: Optional[Path] = typer.Option(None, "--baseline", metavar="TRACE", help="A stored trace to compare with, site by site."),
    fail_on_increase: bool = typer.Option(False, "--fail-on-increase", help="With --baseline: fail when any site has more copies or bytes."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="With --run: where to save the trace."),
    force: bool = typer.Option(False, "--force", help="With --run: overwrite --output if it exists."),
    focus: options.Globs = typer.Option(
        None, "--focus", metavar="GLOB", help="With --run: attribute copies to the first frame matching GLOB (repeatable)."
    ),
    hide: options.Globs = typer.Option(
        None, "--hide", metavar="GLOB", help="With --run: never attribute copies to frames matching GLOB (repeatable)."
    ),
    no_verdicts: bool = typer.Option(
        False, "--no-verdicts",
        help="With --run: copies only, no verdicts (the cheap capture). max_copies / max_bytes apply; a budget with max_eliminable is refused.",
    ),
) -> int:
    """Check copies against a budget: exit 0 within it, 1 over it (or grown), 2 on bad input."""
    from copyhunt.analysis.runs import pick
    from copyhunt.cli.runs import read_run, run_trace
    from copyhunt.gate.runs import evaluate_run
    from copyhunt.report.gate_report import render_gate

    if json_output:
        fmt = options.json_format(fmt)
    args = list(paths or [])
    checked = _check_args(args, budget, run, baseline, fail_on_increase, output, force, focus, hide, no_verdicts)
    # A baseline run folder (or a trace with children) counts every process's copies together.
    base_trace = run_trace([checked.baseline], None)[0] if checked.baseline is not None else None
    if run is None:
        trace_path = args[0]
    else:
        traced = _run_target(run, args, output, force, focus or (), hide or (), quiet_stdout=fmt is not Format.text,
                             verdicts=not no_verdicts)
        if traced.exit_code != EXIT_OK:
            return traced.exit_code  # the target raised (3) or was interrupted (130): no verdict on half a run
        if not traced.trace.meta.complete or not traced.path.is_file():
            raise IncompleteTraceError(f"the run left no complete trace ({traced.trace.meta.error or 'missing'}); no verdict")
        trace_path = str(traced.path)
    # A run folder, or a trace with children: per = "rank" rules per process, the others over the whole run.
    processes = read_run([Path(trace_path)])
    whole = pick(processes, None)
    if not whole.meta.complete:  # fail closed: no verdict on half a run
        raise IncompleteTraceError(
            f"{trace_path}: the trace is incomplete ({whole.meta.error or 'the run did not finish'}); no verdict on half a run"
        )
    trace_label = trace_path if run is None else display_path(trace_path)
    result = evaluate_run(processes, checked.budget, base_trace, fail_on_increase)
    render_gate(
        console_for(fmt),
        result,
        fmt,
        trace=trace_label,
        budget=None if checked.budget_path is None else str(checked.budget_path),
        baseline=None if baseline is None else str(baseline),
    )
    return EXIT_OK if result.ok else EXIT_VIOLATION


def _check_args(
    args: list[str], budget: Path | None, run: str | None, baseline: Path | None, fail_on_increase: bool,
    output: Path | None, force: bool, focus: list[str] | None, hide: list[str] | None, no_verdicts: bool = False,
) -> _GateArgs:
    """Usage errors (exit 2), and the budget read and parsed BEFORE running anything: a typo must not cost a run."""
    from copyhunt.gate import find_budget, load_budget

    if fail_on_increase and baseline is None:
        raise typer.BadParameter("needs --baseline TRACE to compare with", param_hint="--fail-on-increase")
    if run is None:
        if len(args) != 1:
            raise typer.BadParameter(
                "give exactly one TRACE file, or --run TARGET [-- ARGS...]" if not args else f"one TRACE file expected, got {len(args)}: {' '.join(args)}",
                param_hint="TRACE",
            )
        if output is not None or force or focus or hide or no_verdicts:
            raise typer.BadParameter("only with --run", param_hint="--output/--force/--focus/--hide/--no-verdicts")
    budget_path = budget if budget is not None else find_budget()
    rules = load_budget(budget_path) if budget_path is not None else None
    if rules is None and baseline is None:
        raise BudgetError("no budget: pass --budget FILE, add ./copyhunt.toml or [tool.copyhunt] to ./pyproject.toml, or compare with --baseline")
    if no_verdicts and rules is not None:
        # Fail closed: a verdict-based limit must never pass for want of verdicts.
        needs = [r.name or f"rule {i + 1}" for i, r in enumerate(rules.rules) if r.max_eliminable is not None]
        if needs:
            raise BudgetError(
                f"--no-verdicts: max_eliminable cannot be checked without verdicts ({', '.join(needs)} in {budget_path}); "
                "drop --no-verdicts, or use a budget without max_eliminable"
            )
    return _GateArgs(args[0] if run is None else None, budget_path, rules, baseline)


def _run_target(run: str, args: list[str], output: Path | None, force: bool, focus: Sequence[str], hide: Sequence[str],
                quiet_stdout: bool, verdicts: bool = True) -> "TraceRun":
    """Trace ``--run TARGET`` (as ``copyhunt trace`` would) and save it; returns the TraceRun."""
    from copyhunt.cli.progress import progress_wanted
    from copyhunt.cli.tracing import resolve_output, trace_target
    from copyhunt.targets import parse_target

    # "-m package.module" (quoted) runs a module, as `copyhunt trace -m` does.
    module = run[3:].strip() if run.startswith("-m ") else None
    target = parse_target(None if module else run, module, args)
    path = resolve_output(output, target, force)
    # JSON / GitHub output own stdout: the program's prints go to stderr.
    traced = trace_target(target, path, force=force, focus=focus, hide=hide, stdout_to_stderr=quiet_stdout, verdicts=verdicts,
                          progress=progress_wanted(json_output=quiet_stdout, stream=sys.stderr))
    print(f"copyhunt: trace saved to {display_path(str(traced.path))}", file=sys.stderr)
    return traced
