"""The verdict rule registry: small pure functions, one per verdict, filled by a decorator.

A rule is ``(copy, ctx) -> Finding | None``: it looks at one copy record and the read-only
:class:`~copyhunt.analysis.index.TraceIndex` of its trace and either returns a finding (verdict,
one-line reason, suggestion) or None. A rule may also return a "needed" finding: an explanation of
why its case almost holds but the copy must stay (only part of a ``cat`` could go, the producer
cannot write that dtype); it is shown when no rule finds the copy eliminable. Rules never mutate
anything and never print; the built-in
ones live in :mod:`copyhunt.analysis.copy_rules` and register themselves on import::

    @rule("dead-store")
    def dead_store(copy: CopyRecord, ctx: TraceIndex) -> Finding | None: ...
"""

from __future__ import annotations

from typing import Callable

from copyhunt.analysis.index import TraceIndex
from copyhunt.records import VERDICTS, CopyRecord, Finding

Rule = Callable[[CopyRecord, TraceIndex], "Finding | None"]

_RULES: dict[str, Rule] = {}


def rule(verdict: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as THE rule for ``verdict`` (one of ``records.VERDICTS``)."""
    if verdict not in VERDICTS or verdict == "needed":
        valid = ", ".join(v for v in VERDICTS if v != "needed")
        raise ValueError(f"unknown verdict {verdict!r} for a rule; valid: {valid}")

    def register(fn: Rule) -> Rule:
        if verdict in _RULES and _RULES[verdict] is not fn:
            raise ValueError(f"a rule for {verdict!r} is already registered ({_RULES[verdict].__qualname__})")
        _RULES[verdict] = fn
        return fn

    return register


def registered() -> tuple[tuple[str, Rule], ...]:
    """The registered rules, strongest verdict first (``records.VERDICTS`` order, so deterministic)."""
    return tuple((v, _RULES[v]) for v in VERDICTS if v in _RULES)


def run_rules(copy: CopyRecord, ctx: TraceIndex) -> tuple[Finding, ...]:
    """Every finding the registered rules make for ``copy`` in rule order (strongest first); "needed"
    explanations sit where their rule does."""
    found: list[Finding] = []
    for verdict, fn in registered():
        finding = fn(copy, ctx)
        if finding is None:
            continue
        if finding.verdict not in (verdict, "needed"):
            # A rule answers for its own verdict only: mixing them would break the strength order.
            raise ValueError(f"rule {fn.__qualname__} registered for {verdict!r} returned {finding.verdict!r}")
        found.append(finding)
    return tuple(found)
