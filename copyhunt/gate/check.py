"""Check a trace against a budget (and optionally against a baseline trace); return violations.

Nothing here prints or picks exit codes: the CLI and the pytest plugin do, from the returned result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable

from copyhunt.analysis.diff import SiteKey, SiteStats, copy_bytes, diff_traces, display_path, site_stats
from copyhunt.gate.budget import Allow, Budget, Limit, Rule, Selector
from copyhunt.records import COPY_KINDS, CopyRecord, Trace, is_eliminable

#: What a violation is about.
MEASURES = ("copies", "bytes", "eliminable", "refuted", "verified", "increase")


def region_matches(region: str | None, pattern: str) -> bool:
    """True when ``region`` lies inside a region matching ``pattern`` at any nesting level.

    ``"moe"`` matches ``"moe"``, ``"decode/moe"`` and ``"decode/moe/experts"``; ``"decode/*"`` matches
    ``"decode/moe"``. Copies outside every region (None) match no pattern.
    """
    if not region:
        return False
    parts = region.split("/")
    n = len(parts)
    return any(fnmatchcase("/".join(parts[i:j]), pattern) for i in range(n) for j in range(i + 1, n + 1))


def site_matches(copy: CopyRecord, pattern: str, root: str | os.PathLike[str] | None = None) -> bool:
    """True when the site's file (shown relative to root, or absolute) or ``file:line`` matches the glob.

    A file outside ``root`` keeps its absolute path; a relative pattern then matches its trailing part
    (``copyhunt/moe/*`` matches ``/elsewhere/copyhunt/moe/modular.py``), so a budget written for the
    repository still applies when the gate runs from another directory.
    """
    if copy.site is None:
        return False
    shown = display_path(copy.site.file, root)
    candidates = (shown, copy.site.file, f"{shown}:{copy.site.line}", f"{copy.site.file}:{copy.site.line}")
    if any(fnmatchcase(c, pattern) for c in candidates):
        return True
    if shown.startswith("/") and not pattern.startswith(("/", "*")):
        return fnmatchcase(shown, f"*/{pattern}") or fnmatchcase(f"{shown}:{copy.site.line}", f"*/{pattern}")
    return False


def selects(selector: Selector, copy: CopyRecord, root: str | os.PathLike[str] | None = None) -> bool:
    """True when ``copy`` is one of the copies ``selector`` is about."""
    if selector.kinds is not None and copy.kind not in selector.kinds:
        return False
    if selector.region is not None and not region_matches(copy.region, selector.region):
        return False
    if selector.op is not None and not fnmatchcase(copy.op, selector.op):
        return False
    if selector.site is not None and not site_matches(copy, selector.site, root):
        return False
    return True


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


def has_verdicts(trace: Trace) -> bool:
    """True when the analysis judged this trace's copies (an empty trace counts as judged)."""
    return not trace.copies or any(c.verdict is not None for c in trace.copies)


def has_verifications(trace: Trace) -> bool:
    """True when copyhunt verify re-ran this trace's program (some copy carries a verification)."""
    return any(c.verification is not None for c in trace.copies)


def _proved(c: CopyRecord, status: str) -> bool:
    """True for an eliminable copy whose re-run came out ``status`` (refuted copies are eliminable by verdict)."""
    return is_eliminable(c.verdict) and c.verification is not None and c.verification.status == status


def _worst_sites(copies: list[CopyRecord], measure: str, root: str | os.PathLike[str] | None) -> tuple[SiteTally, ...]:
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
    if measure == "eliminable":
        return f"{n} eliminable {noun}"
    if measure == "refuted":
        return f"{n} refuted eliminable {noun}"
    if measure == "verified":
        return f"{n} verified eliminable {noun}"
    return f"{n} {noun}"


def _check_rule(rule: Rule, copies: list[CopyRecord], judged: bool, verified: bool, root: str | os.PathLike[str] | None) -> RuleResult:
    mine = [c for c in copies if selects(rule.selector, c, root)]
    n_copies = len(mine)
    n_bytes = sum(copy_bytes(c) for c in mine)
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
    allowed_counts = [[0, 0] for _ in budget.allow]
    counted = []
    for c in trace.copies:
        for i, entry in enumerate(budget.allow):
            if selects(entry.selector, c, root):
                allowed_counts[i][0] += 1
                allowed_counts[i][1] += copy_bytes(c)
                break  # first matching entry owns the copy, so totals add up
        else:
            counted.append(c)
    judged = has_verdicts(trace)
    verified = has_verifications(trace)
    results = tuple(_check_rule(r, counted, judged, verified, root) for r in budget.rules)
    notes = []
    if not judged and any(r.max_eliminable is not None for r in budget.rules):
        notes.append("max_eliminable not checked: the trace carries no verdicts (trace it with a copyhunt that judges copies)")
    unchecked = [k for k in ("max_refuted", "max_verified") if any(getattr(r, k) is not None for r in budget.rules)]
    if not verified and unchecked:
        notes.append(f"{' and '.join(unchecked)} not checked: the trace was not verified (make it with copyhunt verify)")
    notes.extend(_filter_notes(trace, budget))
    if not trace.meta.complete:
        notes.append(f"the trace is incomplete ({trace.meta.error or 'the target did not finish'}): counts are a lower bound")
    return GateResult(
        violations=tuple(v for r in results for v in r.violations),
        rules=results,
        allowed=tuple(AllowedGroup(a, n, b) for a, (n, b) in zip(budget.allow, allowed_counts)),
        notes=tuple(notes),
    )


def _filter_notes(trace: Trace, budget: Budget) -> list[str]:
    """Say when the capture filtered copies out, so a rule could not see what it counts."""
    filters = trace.meta.filters or {}
    notes = []
    recorded = filters.get("kinds")
    if recorded:
        for rule in budget.rules:
            wanted = rule.selector.kinds or COPY_KINDS
            missing = [k for k in wanted if k not in recorded]
            if missing:
                notes.append(f"{rule.name}: the trace recorded only {', '.join(recorded)} copies, so {', '.join(missing)} copies went uncounted")
    if filters.get("region"):
        notes.append(f"the trace holds only copies inside region {filters['region']!r}")
    return notes


def check_increase(trace: Trace, baseline: Trace, root: str | os.PathLike[str] | None = None) -> tuple[Violation, ...]:
    """One violation per site with more copies or bytes than in ``baseline`` (new sites included)."""
    out = []
    for ch in diff_traces(baseline, trace, root).grown:
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


def find_budget(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The budget file of a project: ``copyhunt.toml``, else a ``pyproject.toml`` with ``[tool.copyhunt]``."""
    base = Path(start) if start is not None else Path(".")
    if (base / "copyhunt.toml").is_file():
        return base / "copyhunt.toml"
    pyproject = base / "pyproject.toml"
    # A cheap textual test first: most pyproject files have no copyhunt table at all.
    if pyproject.is_file() and "[tool.copyhunt" in pyproject.read_text(encoding="utf-8", errors="replace"):
        return pyproject
    return None
