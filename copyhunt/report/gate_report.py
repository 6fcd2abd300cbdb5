"""Render a gate result as text (with the offending source lines), JSON, or GitHub annotations.

Renderers write to an injected rich Console and run nothing. The GitHub format prints
``::error file=F,line=L,title=...::message`` workflow commands so that a pull request marks the line.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from copyhunt.report import Format
from copyhunt.text import human_bytes, visible
from copyhunt.validation import source_line

if TYPE_CHECKING:  # report sits beside gate: it renders gate's records, never calls it
    from copyhunt.analysis.diff import SiteKey, SiteStats
    from copyhunt.gate.check import GateResult, SiteTally, Violation

GATE_SCHEMA = "copyhunt.gate/1"
#: GitHub shows at most 10 error annotations per step: list the worst sites only.
MAX_ANNOTATED_SITES = 10


def site_source(key: "SiteKey") -> str | None:
    """The site's source text: the one the trace recorded, else (a trace taken before copyhunt recorded
    it) the line of a regular, size-limited file under the current directory, never any other file."""
    if key.source_text is not None:
        return key.source_text or None
    return source_line(key.file, key.line, root=os.getcwd())


def _site_json(t: "SiteTally") -> dict[str, Any]:
    k, s = t.key, t.stats
    out: dict[str, Any] = {
        "file": k.file,
        "line": k.line,
        "function": k.function,
        "source_text": k.source_text,
        "op": k.op,
        "kind": k.kind,
        "count": s.count,
        "bytes": s.bytes,
        "eliminable": s.eliminable,
        "device_us": s.device_us,
    }
    if t.before is not None:
        out["before"] = {"count": t.before.count, "bytes": t.before.bytes, "device_us": t.before.device_us}
    return out


def gate_to_json(result: "GateResult", trace: str | None = None, budget: str | None = None, baseline: str | None = None) -> dict[str, Any]:
    """The gate result as a JSON-ready document (schema ``copyhunt.gate/1``)."""
    return {
        "schema": GATE_SCHEMA,
        "ok": result.ok,
        "trace": trace,
        "budget": budget,
        "baseline": baseline,
        "violations": [
            {
                "rule": v.rule,
                "measure": v.measure,
                "actual": v.actual,
                "allowed": v.allowed,
                "limit": None if v.limit is None else v.limit.value,
                "headroom": None if v.limit is None else v.limit.headroom,
                "message": v.message,
                "sites": [_site_json(t) for t in v.sites],
            }
            for v in result.violations
        ],
        "rules": [
            {
                "name": r.rule.name,
                "selector": r.rule.selector.describe(),
                "copies": r.copies,
                "bytes": r.bytes,
                "eliminable": r.eliminable,
                "max_copies": None if r.rule.max_copies is None else r.rule.max_copies.allowed,
                "max_bytes": None if r.rule.max_bytes is None else r.rule.max_bytes.allowed,
                "max_eliminable": None if r.rule.max_eliminable is None else r.rule.max_eliminable.allowed,
                "refuted": r.refuted,
                "verified": r.verified,
                "max_refuted": None if r.rule.max_refuted is None else r.rule.max_refuted.allowed,
                "max_verified": None if r.rule.max_verified is None else r.rule.max_verified.allowed,
                "ok": not r.violations,
            }
            for r in result.rules
        ],
        "allowed": [
            {"selector": a.allow.selector.describe(), "reason": a.allow.reason, "copies": a.copies, "bytes": a.bytes}
            for a in result.allowed
        ],
        "notes": list(result.notes),
    }


def render_gate_json(console: Console, result: "GateResult", **labels: str | None) -> None:
    """Print the JSON document and nothing else."""
    console.out(json.dumps(gate_to_json(result, **labels), indent=2, allow_nan=False), highlight=False)


def _site_line(t: "SiteTally") -> str:
    k, s = t.key, t.stats
    noun = "copy" if s.count == 1 else "copies"
    text = f"{k.short()}  {k.op} {k.kind}  {s.count} {noun}, {human_bytes(s.bytes)}"
    if t.before is not None:
        text += f" (was {t.before.count}, {human_bytes(t.before.bytes)})"
    return text


def _limit_cell(actual: int | None, limit: Any, as_bytes: bool = False) -> str:
    if limit is None:
        return "-" if actual is None or not as_bytes else human_bytes(actual)
    if actual is None:
        return f"n/a / {limit.allowed}"
    if as_bytes:
        return f"{human_bytes(actual)} / {human_bytes(limit.allowed)}"
    return f"{actual} / {limit.allowed}"


def render_gate_text(
    console: Console,
    result: "GateResult",
    *,
    trace: str | None = None,
    budget: str | None = None,
    baseline: str | None = None,
    max_sites: int = 5,
) -> None:
    """Verdict, each violation with its worst sites and their source lines, the rules table, notes."""

    def p(text: str = "", style: str | None = None) -> None:
        console.print(text, style=style, markup=False, highlight=False)

    n = len(result.violations)
    if result.ok:
        p("copyhunt gate: PASS - within budget", style="bold green")
    else:
        p(f"copyhunt gate: FAIL - {n} violation{'s' if n != 1 else ''}", style="bold red")
    for label, value in (("trace", trace), ("budget", budget), ("baseline", baseline)):
        if value:
            p(f"  {label:<8} {value}")
    for v in result.violations:
        p()
        p(f"x {v.message}", style="red")
        for t in v.sites[:max_sites]:
            p(f"    {_site_line(t)}")
            src = site_source(t.key)
            if src is not None:
                p(f"      {t.key.line:>5} | {src}", style="dim")
        if len(v.sites) > max_sites:
            p(f"    ... and {len(v.sites) - max_sites} more sites")
    if result.rules:
        p()
        table = Table(title=None, show_edge=False, pad_edge=False, box=None, header_style="bold")
        # The rule name takes the room and folds; the numbers never wrap.
        table.add_column("", no_wrap=True)
        table.add_column("rule", ratio=1, overflow="fold")
        # The proof columns only when a rule budgets them (copyhunt verify's results).
        proofs = [m for m in ("refuted", "verified") if any(getattr(r.rule, f"max_{m}") is not None for r in result.rules)]
        for col in ("copies", "bytes", "eliminable", *proofs):
            table.add_column(col, no_wrap=True)
        for r in result.rules:
            cells = [
                "ok" if not r.violations else "FAIL",
                f"{r.rule.name} ({r.rule.selector.describe()})" if r.rule.name != r.rule.selector.describe() else r.rule.name,
                _limit_cell(r.copies, r.rule.max_copies),
                _limit_cell(r.bytes, r.rule.max_bytes, as_bytes=True),
                _limit_cell(r.eliminable, r.rule.max_eliminable) if r.rule.max_eliminable is not None else "-",
            ]
            for m in proofs:
                limit = getattr(r.rule, f"max_{m}")
                cells.append(_limit_cell(getattr(r, m), limit) if limit is not None else "-")
            table.add_row(*cells)
        console.print(table)
    for a in result.allowed:
        noun = "copy" if a.copies == 1 else "copies"
        p(f"allowed: {a.allow.selector.describe()}: {a.copies} {noun}, {human_bytes(a.bytes)} - {a.allow.reason}")
    for note in result.notes:
        p(f"note: {note}", style="yellow")


def _escape_data(text: str) -> str:
    # Control characters visible (a log shows ESC sequences), then GitHub workflow-command escaping
    # (actions/toolkit: escapeData / escapeProperty); newlines stay for %0A.
    text = visible(text, keep_newlines=True)
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, file: str | None = None, line: int | None = None, title: str | None = None) -> str:
    """One GitHub workflow command, e.g. ``::error file=a.py,line=3,title=copyhunt::msg``."""
    props = []
    if file:
        props.append(f"file={_escape_property(file)}")
        if line:
            props.append(f"line={line}")
    if title:
        props.append(f"title={_escape_property(title)}")
    head = f"::{level} {','.join(props)}" if props else f"::{level}"
    return f"{head}::{_escape_data(message)}"


def site_annotations(level: str, title: str, message: str, sites: "tuple[SiteTally, ...]") -> list[str]:
    """One annotation per offending site (the worst ten); one without a file when no site is known."""
    lines = []
    for t in sites[:MAX_ANNOTATED_SITES]:
        k: SiteKey = t.key
        s: SiteStats = t.stats
        where = "this site" if k.file.startswith("<") else "this line"
        here = f"{message} [{where}: {k.op} {k.kind}, {s.count} {'copy' if s.count == 1 else 'copies'}, {human_bytes(s.bytes)}]"
        if k.file.startswith("<"):
            lines.append(annotation(level, f"{k.short()}: {here}", title=title))
        else:
            lines.append(annotation(level, here, file=k.file, line=k.line, title=title))
    if not sites:
        lines.append(annotation(level, message, title=title))
    return lines


def render_gate_github(console: Console, result: "GateResult", **labels: str | None) -> None:
    """GitHub Actions annotations for each violation's sites, notices for notes, then a summary line."""

    def out(text: str) -> None:
        console.out(text, highlight=False)  # out(), not print(): a workflow command must never wrap

    v: Violation
    for v in result.violations:
        for line in site_annotations("error", f"copyhunt gate: {v.rule}", v.message, v.sites):
            out(line)
    for note in result.notes:
        out(annotation("notice", note, title="copyhunt gate"))
    n = len(result.violations)
    out("copyhunt gate: PASS - within budget" if result.ok else f"copyhunt gate: FAIL - {n} violation{'s' if n != 1 else ''}")


def render_gate(console: Console, result: "GateResult", fmt: Format = Format.text, **labels: str | None) -> None:
    """Render in one of the output formats."""
    {Format.text: render_gate_text, Format.json: render_gate_json, Format.github: render_gate_github}[Format(fmt)](console, result, **labels)
