"""The merged table of a run of several processes (``copyhunt.analysis.runs``), and its JSON document.

`render_run_table(merged, console)` prints: one line per process (label, pid, rank, device, copies,
bytes, device time, status), then one row per site with a column per process (its count, and its
device time when it was timed), the total count and bytes, and the imbalance across ranks; then the
collective calls, as their own rows (never counted as copies); then the notes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from copyhunt.analysis.runs import Cell, MergedRow, MergedRun
from copyhunt.text import human_bytes, short_op

#: The schema of ``report --json`` for a run.
RUN_SCHEMA = "copyhunt.run/1"


def render_run_table(merged: MergedRun, console: Console, *, top: int = 20) -> None:
    """Print the processes, the merged copy rows, the collective rows and the notes."""
    console.print(Text(f"run: {merged.source}", style="bold"))
    console.print(Text(f"{len(merged.members)} processes, {merged.copies} {'copy' if merged.copies == 1 else 'copies'}, "
                       f"{human_bytes(merged.bytes)} written"))
    ranks = any(m.meta.rank is not None for m in merged.members)
    timed = any(m.device_us is not None for m in merged.members)
    procs = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=True)
    headers = ["Process", "Pid", *(["Rank"] if ranks else []), "Device", "Copies", "Bytes", *(["Dev us"] if timed else []), "Status"]
    for h in headers:
        numeric = h in ("Pid", "Rank", "Copies", "Bytes", "Dev us")
        procs.add_column(h, justify="right" if numeric else "left", no_wrap=h not in ("Device", "Status"),
                         overflow="fold", ratio=1 if h == "Status" else None)
    for m in merged.members:
        meta = m.meta
        rank = "-" if meta.rank is None else f"{meta.rank}/{meta.world_size}" if meta.world_size is not None else str(meta.rank)
        status = Text("complete") if meta.complete else Text(f"INCOMPLETE: {meta.error or 'did not finish'}", style="bold red")
        cells: list[Any] = [m.label, "-" if meta.pid is None else str(meta.pid), *([rank] if ranks else []), meta.device,
                            str(m.copies), human_bytes(m.bytes), *([_us(m.device_us)] if timed else []), status]
        procs.add_row(*cells)
    console.print()
    console.print(procs)
    if not merged.rows:
        console.print("No copies recorded.")
    else:
        shown = merged.rows if top <= 0 else merged.rows[:top]
        console.print()
        console.print(_rows_table(merged, shown, "Site", collective=False))
        hidden = merged.rows[len(shown):]
        if hidden:
            n = sum(r.count for r in hidden)
            console.print(Text(f"... {len(hidden)} more sites: {n} copies, {human_bytes(sum(r.bytes for r in hidden))} (--top 0 shows all)", style="dim"))
    if merged.collectives:
        console.print()
        console.print(Text("collective calls (not copies):", style="bold"))
        console.print(_rows_table(merged, merged.collectives, "Site", collective=True))
    notes = [f"{m.label}: {n}" for m in merged.members for n in m.meta.notes]
    if notes:
        console.print()
        for n in notes:
            console.print(Text(f"note: {n}", style="dim"))


def _rows_table(merged: MergedRun, rows: tuple[MergedRow, ...], first: str, collective: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=True)
    table.add_column(first, overflow="fold", ratio=1)
    table.add_column("Op", no_wrap=True)
    if not collective:
        table.add_column("Kind", no_wrap=True)
    for label in merged.labels:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("Calls" if collective else "Total", justify="right", no_wrap=True)
    table.add_column("Bytes", justify="right", no_wrap=True)
    if not collective:
        table.add_column("Imbal", justify="right", no_wrap=True)
    timed = any(c.device_us is not None for r in rows for c in r.cells)
    for r in rows:
        cells = [r.key.short(), short_op(r.key.op)]
        if not collective:
            cells.append(r.key.kind)
        cells += [_cell(c, timed) for c in r.cells]
        cells += [str(r.count), human_bytes(r.bytes)]
        if not collective:
            cells.append(_ratio(merged.imbalance(r)))
        table.add_row(*cells)
    return table


def _cell(c: Cell, timed: bool) -> str:
    """A process's count, with its device time when the site was timed somewhere."""
    if not timed:
        return str(c.count)
    return f"{c.count} ({_us(c.device_us)} us)" if c.device_us is not None else str(c.count)


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.2f}"


def run_to_json(merged: MergedRun) -> dict[str, Any]:
    """The merged run as a JSON document: processes, sites and collectives with a per-process breakdown."""

    def row(r: MergedRow, collective: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"file": r.key.file, "line": r.key.line, "function": r.key.function, "op": r.key.op}
        if not collective:
            imb = merged.imbalance(r)
            d.update(kind=r.key.kind, eliminable=r.eliminable,
                     imbalance=None if imb is None else ("inf" if math.isinf(imb) else imb))
        d.update(count=r.count, bytes=r.bytes, device_us=r.device_us,
                 per_process={label: {"count": c.count, "bytes": c.bytes, "device_us": c.device_us}
                              for label, c in zip(merged.labels, r.cells)})
        return d

    return {
        "schema": RUN_SCHEMA,
        "source": merged.source,
        "copies": merged.copies,
        "bytes": merged.bytes,
        "processes": [
            {"label": m.label, "path": m.path, "pid": m.meta.pid, "parent_pid": m.meta.parent_pid, "rank": m.meta.rank,
             "world_size": m.meta.world_size, "local_rank": m.meta.local_rank, "device": m.meta.device,
             "complete": m.meta.complete, "error": m.meta.error, "copies": m.copies, "bytes": m.bytes,
             "device_us": m.device_us, "collectives": m.collectives}
            for m in merged.members
        ],
        "sites": [row(r, False) for r in merged.rows],
        "collectives": [row(r, True) for r in merged.collectives],
    }


def render_run_json(merged: MergedRun, console: Console) -> None:
    """Write :func:`run_to_json` as one JSON line to the console's file."""
    console.file.write(json.dumps(run_to_json(merged)) + "\n")
    console.file.flush()
