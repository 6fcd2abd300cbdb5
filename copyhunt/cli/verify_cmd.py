"""`copyhunt verify TARGET|TRACE`: prove or refute each eliminable site by re-running the program with it elided."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from pathlib import Path
from typing import Any, List, Optional

import typer

from copyhunt.cli import options
from copyhunt.cli.app import command
from copyhunt.cli.console import stdout_console
from copyhunt.cli.tracing import _save, print_user_traceback, resolve_output
from copyhunt.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TARGET_FAILED, CopyhuntError, TraceFormatError
from copyhunt.records import Trace
from copyhunt.report.json_out import render_json
from copyhunt.report.table import render_table
from copyhunt.targets import DEFAULT_TARGET, Target, TargetExit, parse_target
from copyhunt.view import recorded_selection, view


@command(
    "verify",
    short_help="Prove or refute each eliminable site by running the program again.",
    help=(
        "Re-run TARGET once per source site with that site's eliminable copies elided the way its verdict "
        "says, and compare the program's results with an untouched run, bit for bit: each site is verified "
        "(on this input), refuted (with the first diverging op) or not testable (with why).\n\n"
        "TARGET is what `copyhunt trace` takes (a script, package.module:function, or -m package.module), "
        "or a trace file saved by it (its target is re-run). A function's return value and printed output "
        f"are compared; a script's printed output and every op's outputs. Without TARGET: {DEFAULT_TARGET}."
    ),
)
def verify_command(
    target: Optional[str] = typer.Argument(None, metavar="[TARGET|TRACE]", show_default=False),
    args: Optional[List[str]] = typer.Argument(None, metavar="[-- ARGS...]", show_default=False),
    module: Optional[str] = typer.Option(None, "-m", "--module", metavar="MODULE", help="Run a module like python -m."),
    output: options.OptionalPath = options.OUTPUT,
    force: bool = options.FORCE,
    sites: Optional[List[str]] = typer.Option(
        None, "--sites", metavar="GLOB", help="Only sites whose file (as shown) or file:line matches GLOB, as --site does (repeatable), e.g. 'pkg/model.py:51'."
    ),
    time_budget: float = typer.Option(
        600.0, "--time-budget", min=0.0, metavar="SECONDS", help="Stop starting site re-runs after this long; the rest are not testable."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="For a function: also require every op's outputs to match (as for scripts), not only its return value."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar on stderr."),
    json_output: bool = options.JSON,
    top: int = options.TOP,
    by: options.GroupBy = options.BY,
) -> int:
    """Verify; exit 0 (refuted sites are findings, gate them with max_refuted), 3 if the program raised."""
    parsed, recorded = _resolve(target, module, args or ())
    path = resolve_output(output, parsed, force)
    parsed.check()
    from copyhunt.verify import verify, warm_and_trace

    program = parsed.run
    kind = "function" if parsed.kind == "function" and not strict else "script"
    focus = recorded.meta.focus if recorded is not None else ()
    hide = recorded.meta.hide if recorded is not None else ()
    bar = _Bar(enabled=progress)
    try:
        bar.say("tracing (a warm-up run, then the traced run)")
        trace = warm_and_trace(program, focus=focus, hide=hide)
        bar.say("two untouched re-runs")
        result = verify(program, trace, kind=kind, sites=sites or (), budget_s=time_budget, progress=bar.update)
    except KeyboardInterrupt:
        bar.close()
        print("copyhunt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TargetExit as exc:
        bar.close()
        print(f"copyhunt: {exc}", file=sys.stderr)
        return EXIT_TARGET_FAILED
    except CopyhuntError:
        bar.close()
        raise
    except Exception as exc:  # noqa: BLE001 - the program's own failure: shown, never swallowed
        bar.close()
        print_user_traceback(exc, sys.stderr)
        print("copyhunt: the program raised before anything could be verified; nothing saved", file=sys.stderr)
        return EXIT_TARGET_FAILED
    bar.close()
    from copyhunt.attribution import rebase_paths
    from copyhunt.text import project_root

    # Paths as `copyhunt trace` records them (relative to the project root): the file compares with traces.
    fresh = rebase_paths(result.trace, project_root(parsed.spec if parsed.kind == "script" else None))
    notes = [*fresh.meta.notes, result.note]
    if recorded is not None:
        notes.extend(_compare(recorded, fresh, str(target)))
    meta = dataclasses.replace(fresh.meta, target=parsed.display, argv=parsed.argv, notes=tuple(notes))
    verified = dataclasses.replace(fresh, meta=meta)
    saved = _save(verified, path, force)
    if json_output:
        render_json(verified, stdout_console())
        print(f"copyhunt: trace saved to {saved}", file=sys.stderr)
    else:
        render_table(view(verified, recorded_selection(verified)), stdout_console(), by=by, top=top, trace_path=str(saved))
    return EXIT_OK


def _resolve(target: str | None, module: str | None, args: Any) -> tuple[Target, Trace | None]:
    """The target to run, and the trace file it came from (TRACE form) or None."""
    if module is None and target is not None and target.endswith(".json") and Path(target).is_file():
        from copyhunt.tracefile import load

        recorded = load(target)
        spec = recorded.meta.target
        if not spec:
            raise TraceFormatError(f"{target}: the trace does not name its target (imported or made with the API); give TARGET instead")
        argv = tuple(recorded.meta.argv[1:]) + tuple(args)
        if spec.startswith("-m "):
            return parse_target(None, spec[3:], argv), recorded
        return parse_target(spec, None, argv), recorded
    return parse_target(target, module, args), None


def _compare(recorded: Trace, fresh: Trace, name: str) -> list[str]:
    """Notes when the fresh trace's copies differ from the file's (a cold first run builds state, say)."""
    def tally(t: Trace) -> Counter:
        return Counter((c.site.file if c.site else None, c.site.line if c.site else None, c.op, c.verdict) for c in t.read_copies())

    from copyhunt.analysis import ensure_judged

    before, after = tally(ensure_judged(recorded)), tally(fresh)
    if before == after:
        return [f"verified against a fresh trace of {name}'s target: the same copies and verdicts as {name}"]
    gone, new = sum((before - after).values()), sum((after - before).values())
    return [f"verified a fresh trace of {name}'s target, which differs from {name}: {gone} copies (with their verdicts) "
            f"only in {name}, {new} only in the fresh run (a first run that builds state, another copyhunt, or changed code)"]


class _Bar:
    """A transient rich progress bar on stderr (or nothing)."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from copyhunt.cli.console import stderr_console

            self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=stderr_console(), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("copyhunt verify", total=None)

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"copyhunt verify: {text}")

    def update(self, done: int, total: int, key: str) -> None:
        if self._progress is not None:
            where = key.rsplit("/", 1)[-1] if key else "done"
            self._progress.update(self._task, completed=done, total=total, description=f"copyhunt verify: {where}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
