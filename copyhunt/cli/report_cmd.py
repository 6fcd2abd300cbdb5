"""`copyhunt report FILE`: show a saved trace (or an imported profiler file) as `trace` did."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import typer

from copyhunt.analysis import read_trace
from copyhunt.cli import options
from copyhunt.cli.app import command
from copyhunt.cli.console import stdout_console
from copyhunt.errors import OutputExistsError
from copyhunt.records import Trace
from copyhunt.report.html import check_output, read_bench, render_html, write_html
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


@command(
    "report",
    short_help="Show a saved trace or an imported profiler file.",
    help="Show a saved trace (copyhunt JSON, or a profiler file copyhunt can import). A run folder, a trace "
    "with children, or several files are merged by site: a column per process (--rank R shows one).",
)
def report_command(
    files: List[Path] = typer.Argument(..., metavar="FILE", show_default=False),
    rank: Optional[int] = options.RANK,
    json_output: bool = options.JSON,
    top: int = options.TOP,
    by: options.GroupBy = options.BY,
    kind: Optional[str] = options.KIND,
    region: Optional[str] = options.REGION,
    site: Optional[str] = options.SITE,
    op: Optional[str] = options.OP,
    focus: options.Globs = typer.Option(
        None, "--focus", metavar="GLOB", help="Attribute each copy again, to the innermost stored frame matching GLOB (repeatable)."
    ),
    hide: options.Globs = typer.Option(
        None, "--hide", metavar="GLOB", help="Attribute again, never to frames matching GLOB: the caller is blamed (repeatable)."
    ),
    sort: options.SortBy = options.SORT,
    min_bytes: Optional[str] = options.MIN_BYTES,
    perfetto: Optional[Path] = typer.Option(
        None, "--perfetto", metavar="OUT.json", help="Also write the copies as a Chrome/Perfetto timeline."
    ),
    html: Optional[Path] = typer.Option(
        None, "--html", metavar="OUT.html", help="Also write a self-contained HTML report (call tree, flame graph, sites)."
    ),
    bench: Optional[list[Path]] = typer.Option(
        None, "--bench", metavar="FILE", help="With --html: embed `copyhunt bench moe` output (its --json file and/or --plot PNG)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files (--perfetto, --html)."),
) -> int:
    """Render FILE; exit 2 (one line) when it is missing, truncated, foreign or from a newer copyhunt."""
    from copyhunt.cli.runs import is_run, read_run, show_run

    selection = options.selection(kind, region, site, op)
    smallest = options.parse_size(min_bytes)
    file = files[0]
    if rank is not None or is_run(files):
        run = read_run(files)
        if rank is not None:
            member = run.member(rank)  # one process's trace, shown as any single trace
            file = Path(member.path)
        elif perfetto is not None or html is not None:
            raise typer.BadParameter("--perfetto and --html take one process's trace: add --rank R, or name one file",
                                     param_hint="--perfetto/--html")
        else:
            show_run(files, json_output=json_output, top=top, selection=selection)
            return 0
    if bench and html is None:
        raise typer.BadParameter("--bench goes with --html (it adds the benchmark to the HTML report)", param_hint="--bench")
    exports: list[Export] = []
    if perfetto is not None:
        exports.append(Export("--perfetto", perfetto, lambda shown, path: write_perfetto(shown, path, force=force), "timeline written to {path} (open it in ui.perfetto.dev)"))
    for e in exports:  # refuse before reading anything
        if e.path.exists() and not force:
            raise OutputExistsError(f"{e.flag} {e.path}: file exists; pass --force to overwrite it")
    if html is not None:
        check_output(html, force)
        attachment = read_bench(bench) if bench else None
        # Named as the flags that chose them (--kind d2d,h2d -> kind=d2d,h2d).
        showing = [
            f"{'kind' if k == 'kinds' else k}={','.join(v) if isinstance(v, list) else v}" for k, v in selection.to_json().items()
        ]

        def write_page(shown: TraceView, path: Path) -> Path:
            page = render_html(shown, trace_path=str(file), showing=showing, bench=attachment)
            return write_html(page, path, force=force)

        exports.append(Export("--html", html, write_page, "HTML report written to {path}"))
    trace = read_trace(file)
    if trace.meta.children and rank is None and perfetto is None and html is None:
        show_run([file], json_output=json_output, top=top, selection=selection)  # the parent with its children
        return 0
    if focus or hide:
        trace = _reattributed(trace, focus or (), hide or ())
    # No --kind / --region / --site / --op: the view the trace records (what `copyhunt trace` printed).
    shown = view(trace, recorded_selection(trace) if selection.everything else selection)
    for e in exports:
        print(f"copyhunt: {e.done.format(path=e.write(shown, e.path))}", file=sys.stderr)
    if json_output:
        # The whole document, as `trace --json` printed it; only the matching copies with a selection.
        render_json(trace if selection.everything else shown.to_trace(), stdout_console())
    else:
        render_table(shown, stdout_console(), by=by, top=top, trace_path=str(file), sort=sort, min_bytes=smallest)
    return 0


def _reattributed(trace: Trace, focus: Sequence[str], hide: Sequence[str]) -> Trace:
    """The trace with its copies attributed again from their stored stacks (``copyhunt.attribution``)."""
    from copyhunt.attribution import reattribute

    meta = dataclasses.replace(trace.meta, focus=tuple(focus), hide=tuple(hide))
    return dataclasses.replace(trace, meta=meta, copies=reattribute(trace.copies, focus, hide))
