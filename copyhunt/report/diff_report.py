"""Render a trace diff: a table of added / removed / changed sites, JSON, or GitHub annotations."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from copyhunt.report.gate_report import annotation
from copyhunt.report import Format
from copyhunt.text import human_bytes, short_op

if TYPE_CHECKING:
    from copyhunt.analysis.diff import SiteChange, SiteStats, TraceDiff

DIFF_SCHEMA = "copyhunt.diff/1"


def _stats_json(s: "SiteStats") -> dict[str, Any]:
    return {"count": s.count, "bytes": s.bytes, "device_us": s.device_us, "eliminable": s.eliminable}


def diff_to_json(diff: "TraceDiff", a: str | None = None, b: str | None = None, show_same: bool = False) -> dict[str, Any]:
    """The diff as a JSON-ready document (schema ``copyhunt.diff/1``); unchanged sites only when asked."""
    return {
        "schema": DIFF_SCHEMA,
        "a": a,
        "b": b,
        "grew": bool(diff.grown),
        "totals": {"a": _stats_json(diff.before), "b": _stats_json(diff.after)},
        "sites": [
            {
                "status": c.status,
                "grew": c.grew,
                "file": c.key.file,
                "line": c.key.line,
                "function": c.key.function,
                "op": c.key.op,
                "kind": c.key.kind,
                "a": _stats_json(c.before),
                "b": _stats_json(c.after),
            }
            for c in diff.changes
            if show_same or c.status != "same"
        ],
    }


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else str(n)


def _signed_bytes(n: int) -> str:
    return ("+" if n > 0 else "-" if n < 0 else "") + human_bytes(abs(n))


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _device_cell(c: "SiteChange") -> str:
    d = c.device_delta_us
    if d is None:
        return "-"
    return f"{_us(c.before.device_us)} -> {_us(c.after.device_us)}"


def render_diff_text(console: Console, diff: "TraceDiff", *, a: str | None = None, b: str | None = None, show_same: bool = False) -> None:
    """Totals line, then one row per site that changed (all sites with ``show_same``)."""
    p = console.print
    ta, tb = diff.before, diff.after
    p(f"copyhunt diff: {a or 'A'} -> {b or 'B'}", markup=False, highlight=False, style="bold")
    p(
        f"  copies {ta.count} -> {tb.count} ({_signed(tb.count - ta.count)}), "
        f"bytes {human_bytes(ta.bytes)} -> {human_bytes(tb.bytes)} ({_signed_bytes(tb.bytes - ta.bytes)})",
        markup=False,
        highlight=False,
    )
    if ta.device_us is not None or tb.device_us is not None:
        p(f"  device time {_us(ta.device_us)} us -> {_us(tb.device_us)} us", markup=False, highlight=False)
    rows = [c for c in diff.changes if show_same or c.status != "same"]
    counts = {s: len(diff.by_status(s)) for s in ("added", "removed", "changed")}
    p(f"  sites: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed", markup=False, highlight=False)
    if not rows:
        p("no site changed", markup=False, highlight=False)
        return
    timed = any(c.device_delta_us is not None for c in rows)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    # The site column gets the room (ratio) and folds last; the op is shown short ("copy_"), as in the tables.
    table.add_column("", no_wrap=True)
    table.add_column("site", ratio=1, overflow="fold")
    for col, justify in (("op", "left"), ("kind", "left"), ("copies", "right"), ("bytes", "right")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    if timed:
        table.add_column("device us", justify="right", no_wrap=True)
    for c in rows:
        row = [
            c.status + (" ^" if c.grew else ""),
            c.key.short(),
            short_op(c.key.op),
            c.key.kind,
            f"{c.before.count} -> {c.after.count}",
            f"{human_bytes(c.before.bytes)} -> {human_bytes(c.after.bytes)}",
        ]
        if timed:
            row.append(_device_cell(c))
        table.add_row(*row)
    p(table)
    if diff.grown:
        p(f"{len(diff.grown)} site(s) grew (^: more copies or bytes)", markup=False, highlight=False, style="red")


def render_diff_json(console: Console, diff: "TraceDiff", *, a: str | None = None, b: str | None = None, show_same: bool = False) -> None:
    """Print the JSON document and nothing else."""
    console.out(json.dumps(diff_to_json(diff, a, b, show_same), indent=2, allow_nan=False), highlight=False)


def render_diff_github(
    console: Console, diff: "TraceDiff", *, a: str | None = None, b: str | None = None, show_same: bool = False, level: str = "warning"
) -> None:
    """One annotation per site that grew (``level``: error when the run fails on it), then a summary line."""
    for c in diff.grown:
        verb = "new copy site" if c.status == "added" else "copies grew"
        msg = (
            f"{verb}: {c.key.op} {c.key.kind}, {c.before.count} -> {c.after.count} copies, "
            f"{human_bytes(c.before.bytes)} -> {human_bytes(c.after.bytes)}"
        )
        if c.key.file.startswith("<"):
            console.out(annotation(level, f"{c.key.short()}: {msg}", title="copyhunt diff"), highlight=False)
        else:
            console.out(annotation(level, msg, file=c.key.file, line=c.key.line, title="copyhunt diff"), highlight=False)
    counts = {s: len(diff.by_status(s)) for s in ("added", "removed", "changed")}
    console.out(
        f"copyhunt diff: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed, {len(diff.grown)} grew",
        highlight=False,
    )


def render_diff(
    console: Console, diff: "TraceDiff", fmt: Format = Format.text, *, a: str | None = None, b: str | None = None,
    show_same: bool = False, fail_on_increase: bool = False,
) -> None:
    """Render in one of the output formats (GitHub: errors when growth fails the run, else warnings)."""
    fmt = Format(fmt)
    if fmt is Format.text:
        render_diff_text(console, diff, a=a, b=b, show_same=show_same)
    elif fmt is Format.json:
        render_diff_json(console, diff, a=a, b=b, show_same=show_same)
    else:
        render_diff_github(console, diff, a=a, b=b, level="error" if fail_on_increase else "warning")
