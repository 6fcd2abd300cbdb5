"""Check a trace against a budget (and optionally against a baseline trace); return violations.

Nothing here prints or picks exit codes: the CLI and the pytest plugin do, from the returned result.
A trace without verdicts is judged first when its op records allow it (``analysis.ensure_judged``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from copyhunt.analysis import ensure_judged
from copyhunt.analysis.diff import SiteKey, SiteStats, diff_traces, site_stats
from copyhunt.gate.budget import Allow, Budget, Limit, Rule
from copyhunt.records import Copy, Trace, is_eliminable, moved_bytes
from copyhunt.view import view

#: What a violation is about.
MEASURES = ("copies", "bytes", "eliminable", "refuted", "verified", "increase")


@dataclass(frozen=True)
class SiteTally:
    """One offending site: where, and what it did."""

    key: SiteKey
    stats: SiteStats
    before: SiteStats | None = None  # for "increase" violations: the baseline's numbers


@dataclass(frozen=True)
class Violation:
    """One broken limit, with a one-line message and the sites responsible (worst first)."""

    rule: str
    measure: str  # one of MEASURES
    actual: int
    allowed: int | None  # None for "increase"
    limit: Limit | None
    message: str
    sites: tuple[SiteTally, ...] = ()


@dataclass(frozen=True)
class RuleResult:
    """What a rule counted, whether or not it was broken (for the report's summary table)."""

    rule: Rule
    copies: int
    bytes: int
    eliminable: int | None  # None: the trace carries no verdicts
    violations: tuple[Violation, ...]
    refuted: int | None = None  # None: the trace was not verified (copyhunt verify)
    verified: int | None = None


@dataclass(frozen=True)
class AllowedGroup:
    """Copies an allowlist entry took out of every rule."""

    allow: Allow
    copies: int
    bytes: int


@dataclass(frozen=True)
class GateResult:
    """Everything a gate run found; ``ok`` is the verdict."""

    violations: tuple[Violation, ...]
    rules: tuple[RuleResult, ...] = ()
    allowed: tuple[AllowedGroup, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing is over budget and nothing grew."""
        return not self.violations


def _proved(c: Copy, status: str) -> bool:
    """True for an eliminable copy whose re-run came out ``status`` (refuted copies are eliminable by verdict)."""
    return is_eliminable(c.verdict) and c.verification is not None and c.verification.status == status


def _worst_sites(copies: list[Copy], measure: str, root: str | os.PathLike[str] | None) -> tuple[SiteTally, ...]:
    if measure == "eliminable":
        copies = [c for c in copies if is_eliminable(c.verdict)]
    elif measure in ("refuted", "verified"):
        copies = [c for c in copies if _proved(c, measure)]
    stats = site_stats(copies, root)
    field = {"copies": "count", "bytes": "bytes", "eliminable": "eliminable", "refuted": "count", "verified": "count"}[measure]
    ranked = sorted(stats.items(), key=lambda kv: (-getattr(kv[1], field), -kv[1].bytes, kv[0]))
    return tuple(SiteTally(k, s) for k, s in ranked)


def _unit(measure: str, n: int) -> str:
    if measure == "bytes":
        return f"{n} bytes"
    noun = "copy" if n == 1 else "copies"
    if measure in ("refuted", "verified"):
        return f"{n} {measure} eliminable {noun}"
    return f"{n} eliminable {noun}" if measure == "eliminable" else f"{n} {noun}"


def _check_rule(rule: Rule, copies: list[Copy], judged: bool, verified: bool, root: str | os.PathLike[str] | None) -> RuleResult:
    mine = [c for c in copies if rule.selector.matches(c, root)]
    n_copies = len(mine)
    n_bytes = moved_bytes(mine)
    n_elim = sum(is_eliminable(c.verdict) for c in mine) if judged else None
    n_refuted = sum(_proved(c, "refuted") for c in mine) if verified else None
    n_verified = sum(_proved(c, "verified") for c in mine) if verified else None
    violations = []
    for measure, limit, actual in (
        ("copies", rule.max_copies, n_copies),
        ("bytes", rule.max_bytes, n_bytes),
        ("eliminable", rule.max_eliminable, n_elim),
        ("refuted", rule.max_refuted, n_refuted),
        ("verified", rule.max_verified, n_verified),
    ):
        if limit is None or actual is None or actual <= limit.allowed:
            continue
        head = f" = {limit.value} + {limit.headroom:g}% headroom" if limit.headroom else ""
        message = f"{rule.name} ({rule.selector.describe()}): {_unit(measure, actual)}, over the limit of {limit.allowed}{head}"
        violations.append(Violation(rule.name, measure, actual, limit.allowed, limit, message, _worst_sites(mine, measure, root)))
    return RuleResult(rule, n_copies, n_bytes, n_elim, tuple(violations), n_refuted, n_verified)


def check(trace: Trace, budget: Budget, root: str | os.PathLike[str] | None = None) -> GateResult:
    """Apply every rule of ``budget`` to ``trace``; allowlisted copies count for no rule."""
    trace = ensure_judged(trace)
    allowed_counts = [[0, 0] for _ in budget.allow]
    counted = []
    for c in trace.read_copies():
        for i, entry in enumerate(budget.allow):
            if entry.selector.matches(c, root):
                allowed_counts[i][0] += 1
                allowed_counts[i][1] += c.moved_bytes
                break  # first matching entry owns the copy, so totals add up
        else:
            counted.append(c)
    judged = trace.judged
    results = tuple(_check_rule(r, counted, judged, trace.verified, root) for r in budget.rules)
    notes = []
    if not judged and any(r.max_eliminable is not None for r in budget.rules):
        notes.append("max_eliminable not checked: the trace carries no verdicts (trace it with a copyhunt that judges copies)")
    unchecked = [k for k in ("max_refuted", "max_verified") if any(getattr(r, k) is not None for r in budget.rules)]
    if not trace.verified and unchecked:
        notes.append(f"{' and '.join(unchecked)} not checked: the trace was not verified (make it with copyhunt verify)")
    if not trace.meta.complete:
        notes.append(f"the trace is incomplete ({trace.meta.error or 'the target did not finish'}): counts are a lower bound")
    return GateResult(
        violations=tuple(v for r in results for v in r.violations),
        rules=results,
        allowed=tuple(AllowedGroup(a, n, b) for a, (n, b) in zip(budget.allow, allowed_counts)),
        notes=tuple(notes),
    )


def check_increase(trace: Trace, baseline: Trace, root: str | os.PathLike[str] | None = None) -> tuple[Violation, ...]:
    """One violation per site with more copies or bytes than in ``baseline`` (new sites included)."""
    out = []
    for ch in diff_traces(view(baseline), view(trace), root).grown:
        b, a = ch.before, ch.after
        message = f"{ch.key.short()} {ch.key.op} {ch.key.kind}: {b.count} -> {a.count} copies, {b.bytes} -> {a.bytes} bytes"
        if ch.status == "added":
            message += " (new site)"
        out.append(Violation("baseline", "increase", a.count, None, None, message, (SiteTally(ch.key, a, b),)))
    return tuple(out)


def merge(result: GateResult, extra: Iterable[Violation], notes: Iterable[str] = ()) -> GateResult:
    """``result`` with more violations and notes appended (e.g. the baseline comparison)."""
    return GateResult(
        violations=result.violations + tuple(extra),
        rules=result.rules,
        allowed=result.allowed,
        notes=result.notes + tuple(notes),
    )


def evaluate(
    trace: Trace,
    budget: Budget | None,
    baseline: Trace | None = None,
    fail_on_increase: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> GateResult:
    """The whole gate: ``budget``'s rules (if any), then the baseline comparison (if any).

    Growth against the baseline fails only with ``fail_on_increase``; otherwise it is a note.
    """
    result = check(trace, budget, root) if budget is not None else GateResult(violations=())
    if baseline is None:
        return result
    grown = check_increase(trace, baseline, root)
    if fail_on_increase:
        return merge(result, grown)
    if grown:
        return merge(result, (), [f"{len(grown)} site(s) grew against the baseline (not failing: no --fail-on-increase)"])
    return result


def find_budget(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The budget file of a project, found the way pytest and ruff find their configuration.

    From ``start`` (default: the current directory) up to the filesystem root, the first folder
    holding a ``copyhunt.toml``, or a ``pyproject.toml`` with a ``[tool.copyhunt]`` table, wins
    (``copyhunt.toml`` first within a folder); a ``pyproject.toml`` without the table is passed over.
    """
    base = Path(start) if start is not None else Path(".")
    base = base.resolve()
    for folder in (base, *base.parents):
        if (folder / "copyhunt.toml").is_file():
            return _shown(folder / "copyhunt.toml")
        pyproject = folder / "pyproject.toml"
        # A cheap textual test first: most pyproject files have no copyhunt table at all.
        if pyproject.is_file() and "[tool.copyhunt" in pyproject.read_text(encoding="utf-8", errors="replace"):
            return _shown(pyproject)
    return None


def _shown(path: Path) -> Path:
    """``path`` relative to the current directory when it sits there or in a parent (``../copyhunt.toml``), else absolute."""
    cwd = Path.cwd().resolve()
    if path.parent == cwd or path.parent in cwd.parents:
        return Path(os.path.relpath(path, cwd))
    return path
