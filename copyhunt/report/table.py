"""The copy table: a header with totals, one row per site (or module / region), a footer.

`render_table(view, console, ...)` prints a `copyhunt.view.TraceView` into the injected rich Console
and nowhere else, so the same function serves `copyhunt trace`, `copyhunt report` and tests (a
fixed-width Console into a StringIO). It reads well at 80 columns, under NO_COLOR and when piped (rich drops ANSI off a TTY).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from copyhunt.analysis import eliminable_summary
from copyhunt.analysis.grouping import CopyGroup, SortBy, group_copies, sort_groups
from copyhunt.records import VERDICTS, VERIFICATION_STATUSES, Copy, TraceMeta, is_eliminable, moved_bytes
from copyhunt.report.calls import code_only, python_call, site_text
from copyhunt.text import display_path, human_bytes, percent, short_op, short_site, status_label, verdict_label
from copyhunt.view import TraceView

#: Rows shown by default (`--top`); 0 shows every group.
DEFAULT_TOP = 20

_BY_TITLE = {"site": "source site", "module": "module", "region": "region"}


@dataclass(frozen=True)
class _Totals:
    """What the header says about the selected copies."""

    copies: int
    noop: int
    bytes: int
    device_us: float | None
    judged: bool
    verified: bool  # some shown copy carries a verification (copyhunt verify)


def render_table(
    view: TraceView,
    console: Console,
    *,
    by: str = "site",
    top: int = DEFAULT_TOP,
    trace_path: str | None = None,
    cwd: str | None = None,
    sort: SortBy | str = SortBy.bytes,
    min_bytes: int = 0,
) -> None:
    """Print header, table and footer for the copies ``view`` shows.

    ``sort`` orders the rows; rows that wrote fewer than ``min_bytes`` bytes are left out (and counted).
    """
    copies = view.copies
    totals = _totals(view)
    console.print(_header(view, totals))
    groups = sort_groups(group_copies(copies, by=by), sort)
    small = [g for g in groups if g.bytes < min_bytes] if min_bytes > 0 else []
    if small:
        groups = [g for g in groups if g.bytes >= min_bytes]
    if not groups:
        console.print()
        console.print("No copies recorded." if not view.trace.copies else "No copies match the filters.")
        _print_small(console, small, by, min_bytes)
    else:
        shown = groups if top <= 0 else groups[:top]
        console.print()
        _print_groups(console, *_rows(view.meta, shown, totals, by, cwd), sources=_sources(shown, by) if by == "site" else None)
        _print_small(console, small, by, min_bytes)
        hidden = groups[len(shown) :]
        if hidden:
            n = sum(g.count for g in hidden)
            b = sum(g.bytes for g in hidden)
            what = _BY_TITLE[by] + ("s" if len(hidden) > 1 else "")
            console.print(
                Text(
                    f"... {len(hidden)} more {what}: {n} {'copy' if n == 1 else 'copies'}, {human_bytes(b)}"
                    " (--top 0 shows all)",
                    style="dim",
                )
            )
        _findings(console, shown, by, cwd)
        _compiled(console, shown, by, cwd)
    _footer(console, view.meta, trace_path, cwd)


def _totals(view: TraceView) -> _Totals:
    """Totals over the selected copies."""
    copies = view.copies
    timed = [c.device.time_us for c in copies if c.device is not None]
    return _Totals(
        copies=len(copies),
        noop=sum(1 for c in copies if c.noop),
        bytes=moved_bytes(copies),
        device_us=sum(timed) if timed else None,
        # Verdict columns when the trace was judged and there is something to judge.
        judged=view.judged and bool(copies),
        verified=any(c.verification is not None for c in copies),
    )


def _header(view: TraceView, totals: _Totals) -> Table:
    """Key/value lines: target, device, copies and bytes, eliminable summary, status."""
    meta = view.meta
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    target = meta.target or "(unknown)"
    if meta.argv[1:]:
        target += " " + " ".join(meta.argv[1:])
    grid.add_row("target", target)
    device = meta.device
    if meta.torch_version:
        device += f" (torch {meta.torch_version})"
    grid.add_row("device", device)
    copies = f"{totals.copies} {'copy' if totals.copies == 1 else 'copies'}, {human_bytes(totals.bytes)} written"
    if totals.noop:
        copies += f" ({totals.noop} noop {'copy moves' if totals.noop == 1 else 'copies move'} 0 bytes)"
    grid.add_row("copies", copies)
    if totals.device_us is not None:
        gpu = f"{totals.device_us:,.1f} us in copies"
        if meta.gpu_time_us:
            gpu += f", {percent(totals.device_us, meta.gpu_time_us)} of {meta.gpu_time_us:,.1f} us GPU time"
        grid.add_row("device time", gpu)
    if totals.judged:
        # One definition of "eliminable" for every output: the analysis' summary line.
        grid.add_row("eliminable", eliminable_summary(view).line())
    if totals.verified:
        grid.add_row("proof", _proof_line(view.copies))
    filters = _filters_line(view)
    if filters:
        grid.add_row("filters", filters)
    if meta.complete:
        grid.add_row("status", "complete")
    else:
        grid.add_row("status", Text(f"INCOMPLETE: {meta.error or 'the run did not finish'}", style="bold red"))
    return grid


def _filters_line(view: TraceView) -> str:
    """The capture's attribution globs and the trace's recorded view (as stored), or the view shown instead."""
    meta = view.meta
    recorded: dict[str, Any] = {"focus": meta.focus, "hide": meta.hide}
    if view.recorded:
        recorded.update(meta.view)
    parts = [f"{k}={_plain_value(v)}" for k, v in sorted(recorded.items()) if v not in (None, "", [], ())]
    line = ", ".join(parts)
    if not view.recorded and not view.selection.everything:
        line += ("; " if line else "") + "showing " + view.selection.describe(", ")
    return line


def _plain_value(value: Any) -> str:
    """A filter value as text (lists comma-joined)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


#: The site column gets at least this many characters, or the table switches to stacked rows.
SITE_MIN_WIDTH = 20


def _rows(meta: TraceMeta, groups: Sequence[CopyGroup], totals: _Totals, by: str, cwd: str | None) -> tuple[list[str], list[list[str | Text]]]:
    """Column headers and cells; device-time and verdict columns only when the trace has them."""
    headers = [_BY_TITLE[by].capitalize(), "Op", "Kind", "Count", "Bytes", "Share"]
    timed = totals.device_us is not None
    if timed:
        headers += ["Dev us", "GPU %"]
    if totals.judged:
        headers.append("Verdict")
    if totals.verified:
        headers.append("Proof")
    rows: list[list[str | Text]] = []
    for g in groups:
        label = short_site(g.sites[0], cwd) if by == "site" and g.sites else g.key
        count = str(g.count) if not g.noop_count else f"{g.count} ({g.noop_count} noop)"
        row: list[str | Text] = [
            label,
            ", ".join(short_op(op) for op in g.ops),
            _kinds_cell(g),
            count,
            human_bytes(g.bytes),
            percent(g.bytes, totals.bytes),
        ]
        if timed:
            row.append("-" if g.device_time_us is None else f"{g.device_time_us:,.1f}")
            row.append("-" if g.device_time_us is None else percent(g.device_time_us, meta.gpu_time_us))
        if totals.judged:
            row.append(_verdict_cell(g))
        if totals.verified:
            row.append(_proof_cell(g))
        rows.append(row)
    return headers, rows


def _kinds_cell(group: CopyGroup) -> str:
    """The group's kinds; a p2p copy names both devices (``p2p cuda:0>cuda:1``)."""
    if "p2p" not in group.kinds:
        return ",".join(group.kinds)
    pairs = sorted({f"{c.src_device}>{c.dst_device}" for c in group.copies if c.kind == "p2p"})
    return ",".join(f"p2p {','.join(pairs)}" if k == "p2p" else k for k in group.kinds)


def _print_small(console: Console, small: Sequence[CopyGroup], by: str, min_bytes: int) -> None:
    """One dim line counting the rows ``--min-bytes`` left out."""
    if not small:
        return
    n = sum(g.count for g in small)
    what = _BY_TITLE[by] + ("s" if len(small) > 1 else "")
    console.print(Text(f"... {len(small)} {what} under {human_bytes(min_bytes)} not shown: {n} {'copy' if n == 1 else 'copies'}, "
                       f"{human_bytes(sum(g.bytes for g in small))} (--min-bytes)", style="dim"))


def _sources(groups: Sequence[CopyGroup], by: str) -> list[tuple[str | None, str | None]]:
    """Per row: the site's source text and the Python call in it that ran a differently named op."""
    out: list[tuple[str | None, str | None]] = []
    for g in groups:
        site = g.sites[0] if g.sites else None
        text = code_only(site_text(site))
        call = None
        for op in g.ops:
            call = python_call(op, text)
            if call is not None:
                call = f"{call} runs {short_op(op)}"
                break
        out.append((text, call))
    return out


def _site_cell(label: str, source: tuple[str | None, str | None] | None, width: int) -> Text:
    """``path:line function``, and under it the source line (and the Python call behind the op).

    Every line is cut to ``width`` here, never by the table: when the label does not fit, the
    function moves to a second line, and whatever still does not fit continues on lines indented by
    two spaces, so nothing but a row's first line starts at column 0 (where it would read as a row of
    its own). Source lines longer than the column end in an ellipsis.
    """
    lines: list[tuple[str, str]] = []
    if len(label) > width and " " in label:
        where, func = label.rsplit(" ", 1)
        lines += [(ln, "") for ln in _wrap(where, width)]
        lines += [(ln, "") for ln in _wrap(f"  {func}", width)]
    else:
        lines += [(ln, "") for ln in _wrap(label, width)]
    if source is not None:
        for extra in source:
            if extra:
                line = f"  {extra}" if extra is source[0] else f"  ({extra})"
                lines.append((line if len(line) <= width else line[: max(width - 1, 3)] + "…", "dim"))
    cell = Text()
    for i, (line, style) in enumerate(lines):
        if i:
            cell.append("\n")
        cell.append(line, style=style)
    return cell


def _wrap(line: str, width: int) -> list[str]:
    """``line`` in pieces of at most ``width``; pieces after the first are indented by two spaces."""
    if len(line) <= width or width < 4:
        return [line]
    out, rest = [line[:width]], line[width:]
    while rest:
        out.append("  " + rest[: width - 2])
        rest = rest[width - 2 :]
    return out


def _print_groups(console: Console, headers: list[str], rows: list[list[str | Text]],
                  sources: list[tuple[str | None, str | None]] | None = None) -> None:
    """A table when the site column keeps SITE_MIN_WIDTH characters, stacked rows otherwise."""
    # Every column but the site keeps its full width (numbers never wrap); 2 spaces between columns.
    fixed = sum(max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers) if i > 0)
    room = console.width - fixed - 2 * (len(headers) - 1)
    if room >= SITE_MIN_WIDTH:
        # Natural widths: the site column is as wide as its longest line (or the room left), never padded.
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False, collapse_padding=True)
        table.add_column(headers[0], overflow="fold", max_width=room)
        for h in headers[1:]:
            numeric = h in ("Count", "Bytes", "Share", "Dev us", "GPU %")
            table.add_column(h, justify="right" if numeric else "left", no_wrap=True)
        for i, row in enumerate(rows):
            label = row[0] if isinstance(row[0], str) else row[0].plain
            table.add_row(_site_cell(label, sources[i] if sources else None, room), *row[1:])
        console.print(table)
        return
    # Narrow terminal: the site on its own line, the numbers below it, labelled.
    for n, row in enumerate(rows, 1):
        console.print(Text(f"{n}. ") + (row[0] if isinstance(row[0], Text) else Text(row[0])), overflow="fold")
        if sources and sources[n - 1][0]:
            console.print(Padding(Text(sources[n - 1][0], style="dim"), (0, 0, 0, 3)), overflow="ellipsis", no_wrap=True)
        details = Text()
        for i, (h, cell) in enumerate(zip(headers[1:], row[1:])):
            if i:
                details.append("  ")
            details.append(f"{h.lower()} ", style="dim")
            details.append(cell if isinstance(cell, Text) else Text(cell))
        console.print(Padding(details, (0, 0, 0, 3)))


def _counted(counts: dict[str, int], label: Any) -> str:
    """``fresh-temporary`` when one kind, else ``2 fresh-temporary, 6 not proven``."""
    present = [(k, n) for k, n in counts.items() if n]
    if len(present) == 1:
        return label(present[0][0])
    return ", ".join(f"{n} {label(k)}" for k, n in present)


def _verdict_cell(group: CopyGroup) -> Text:
    """The group's verdicts, each counted when they differ: every number counts copies of that verdict."""
    if group.verdict is None:
        return Text("-")
    counts = {v: sum(1 for c in group.copies if c.verdict == v) for v in VERDICTS}
    others = sum(1 for c in group.copies if c.verdict not in VERDICTS)  # unjudged, or a newer copyhunt's verdict
    text = _counted(counts, verdict_label) + (f", {others} other" if others else "")
    return Text(text, style="bold yellow" if is_eliminable(group.verdict) else "")


def _proof_cell(group: CopyGroup) -> Text:
    """What copyhunt verify found for the group's eliminable copies ("-": not re-run)."""
    elim = [c for c in group.copies if is_eliminable(c.verdict)]
    if not elim:
        return Text("")
    counts = {s: sum(1 for c in elim if c.verification is not None and c.verification.status == s) for s in VERIFICATION_STATUSES}
    if not any(counts.values()):
        return Text("-")
    untested = sum(1 for c in elim if c.verification is None)
    text = _counted(counts, status_label) + (f", {untested} not re-run" if untested else "")
    return Text(text, style="bold red" if counts["refuted"] else "")


def _proof_line(copies: Sequence[Copy]) -> str:
    """``5 eliminable copies re-run: 4 verified, 1 refuted, 0 not testable (on this input)``."""
    elim = [c for c in copies if is_eliminable(c.verdict)]
    counts = {s: sum(1 for c in elim if c.verification is not None and c.verification.status == s) for s in VERIFICATION_STATUSES}
    parts = ", ".join(f"{n} {status_label(s)}" for s, n in counts.items())
    untested = sum(1 for c in elim if c.verification is None)
    tail = f"; {untested} not re-run" if untested else ""
    return f"{len(elim) - untested} eliminable copies re-run: {parts} (on this input){tail}"


def _findings(console: Console, groups: Sequence[CopyGroup], by: str, cwd: str | None) -> None:
    """Per source site of the shown groups: each eliminable verdict once (how many copies, the first
    one's reason and suggestion), then what copyhunt verify found there."""
    sites: dict[str, list[Copy]] = {}
    for g in groups:
        for c in g.copies:
            if is_eliminable(c.verdict):
                sites.setdefault(short_site(c.site, cwd) if c.site is not None else g.key, []).append(c)
    lines: list[Text | Padding] = []
    for where, copies in sites.items():
        lines.append(Text(where, style="bold"))
        for verdict in dict.fromkeys(c.verdict for c in copies):
            mine = [c for c in copies if c.verdict == verdict]
            first = mine[0]
            line = Text()
            line.append(f"{verdict}", style="yellow")
            line.append(f" ({len(mine)} {'copy' if len(mine) == 1 else 'copies'})")
            if first.reason:
                line.append(f": {first.reason}")
            lines.append(Padding(line, (0, 0, 0, 2)))
            if first.suggestion:
                lines.append(Padding(Text(f"-> {first.suggestion}"), (0, 0, 0, 4)))
        proofs = list(dict.fromkeys((c.verification.status, c.verification.detail) for c in copies if c.verification is not None))
        for status, detail in proofs:
            lines.append(Padding(Text(f"proof: {status_label(status)}: {detail}", style="bold red" if status == "refuted" else ""), (0, 0, 0, 2)))
    if lines:
        console.print()
        console.print(Text("Why they look eliminable:", style="bold"))
        for line in lines:
            console.print(line)


_HOW = {
    "fused": "fused into {k} (no separate pass)",
    "kernel": "a copy kernel of its own: {k}",
    "extern": "an extern call: {k}",
}


def _compiled(console: Console, groups: Sequence[CopyGroup], by: str, cwd: str | None) -> None:
    """How Inductor runs the copies of compiled graphs in the shown groups (``CopyRecord.compiled``)."""
    lines: list[Text] = []
    for g in groups:
        first = next((c for c in g.copies if c.compiled is not None), None)
        if first is None or first.compiled is None:
            continue
        info = first.compiled
        kernels = ", ".join(info.kernels) or "unnamed kernel"
        what = _HOW.get(info.how, "{k}").format(k=kernels)
        if info.mutates_input:
            what += f"; writes a graph input in place ({info.mutates_input})"
        where = short_site(first.site, cwd) if by == "site" and first.site is not None else g.key
        line = Text()
        line.append(f"{where}: ", style="bold")
        line.append(what)
        lines.append(line)
    if lines:
        console.print()
        console.print(Text("Kept by torch.compile (Inductor), per execution:", style="bold"))
        for line in lines:
            console.print(line)


def _footer(console: Console, meta: TraceMeta, trace_path: str | None, cwd: str | None) -> None:
    """Notes from the trace, then where the trace file is (after a blank line)."""
    if meta.notes or trace_path is not None:
        console.print()
    for note in meta.notes:
        console.print(Text(f"note: {note}", style="dim"))
    if trace_path is not None:
        console.print(Text(f"{file_word(meta)}: {display_path(trace_path, cwd)}"))


#: What an imported file is called in the footer, by ``TraceMeta.imported_from``.
_IMPORTED_WORDS = {"chrome": "torch.profiler trace", "rocprofv3-csv": "rocprofv3 CSV", "rocprofv3-json": "rocprofv3 JSON",
                   "rocprofv3-rocpd": "rocprofv3 rocpd database"}


def file_word(meta: TraceMeta) -> str:
    """``trace file`` for copyhunt's own traces; ``imported from rocprofv3 CSV`` for a profiler's file."""
    if meta.imported_from is None:
        return "trace file"
    return f"imported from {_IMPORTED_WORDS.get(meta.imported_from, meta.imported_from)}"
