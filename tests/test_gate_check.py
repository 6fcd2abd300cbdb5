"""check(): budgets applied to hand-built traces; limits exactly at the boundary; allowlist; baseline."""

from __future__ import annotations

import pytest

from copyhunt.gate.budget import Allow, Budget, Limit, Rule
from copyhunt.selection import Selection
from copyhunt.gate.check import check, check_increase
from copyhunt.selection import region_matches, site_matches
from factories import copy, trace
from copyhunt.records import Copy, DeviceTiming, Frame, Trace, TraceMeta

ROOT = "/repo"


def _copy(line: int, nbytes: int = 100, file: str = "/repo/pkg/model.py", **kw) -> Copy:
    return copy(0, nbytes, site=Frame(file, line, "forward"), **kw)


def _trace(*copies: Copy, complete: bool = True) -> Trace:
    return trace(*copies, meta=TraceMeta(complete=complete, error=None if complete else "target raised ValueError"))


def _budget(*rules: Rule, allow: tuple[Allow, ...] = ()) -> Budget:
    return Budget(rules=rules, allow=allow)


@pytest.mark.parametrize(("region", "pattern", "expected"), [
    ("moe", "moe", True),
    ("decode/moe", "moe", True),
    ("decode/moe/experts", "moe", True),
    ("decode/moe", "decode/*", True),
    ("decode/moemoe", "moe", False),
    ("attention", "moe", False),
    (None, "moe", False),
    ("decode/moe", "mo?", True),
])
def test_region_matches_any_nesting(region, pattern, expected):
    assert region_matches(region, pattern) is expected


def test_site_glob_on_relative_path_and_line():
    c = _copy(12)
    assert site_matches(c.site, "pkg/*.py", ROOT)
    assert site_matches(c.site, "*/model.py", ROOT)
    assert site_matches(c.site, "pkg/model.py:12", ROOT)
    assert site_matches(c.site, "/repo/pkg/model.py", ROOT)  # the absolute path matches too
    assert not site_matches(c.site, "pkg/model.py:13", ROOT)
    assert not site_matches(c.site, "other/*.py", ROOT)
    # Outside the root the path stays absolute; a relative pattern matches its trailing part.
    elsewhere = _copy(12, file="/elsewhere/pkg/model.py")
    assert site_matches(elsewhere.site, "pkg/*.py", ROOT)
    assert site_matches(elsewhere.site, "pkg/model.py:12", ROOT)
    assert not site_matches(elsewhere.site, "kg/*.py", ROOT)  # whole path components only
    assert not site_matches(c.site, "kg/*.py", ROOT)
    assert not site_matches(None, "*", ROOT)


def test_selects_combines_every_field():
    c = _copy(12, kind="h2d", region="decode/moe", op="aten._to_copy.default")
    assert Selection().matches(c, ROOT)
    assert Selection(kinds=("h2d", "d2h"), region="moe", site="pkg/*", op="aten._to_copy*").matches(c, ROOT)
    assert not Selection(kinds=("d2d",)).matches(c, ROOT)
    assert not Selection(op="aten.copy_*").matches(c, ROOT)


def test_max_copies_at_the_boundary():
    trace = _trace(_copy(10), _copy(10), _copy(20))  # 3 d2d copies
    assert check(trace, _budget(Rule("r", Selection(kinds=("d2d",)), max_copies=Limit(3))), ROOT).ok  # 3 <= 3
    result = check(trace, _budget(Rule("r", Selection(kinds=("d2d",)), max_copies=Limit(2))), ROOT)  # 3 > 2
    assert not result.ok
    (v,) = result.violations
    assert (v.rule, v.measure, v.actual, v.allowed) == ("r", "copies", 3, 2)
    assert v.message == "r (kind=d2d): 3 copies, over the limit of 2"
    # Worst site first: line 10 made 2 copies, line 20 made 1.
    assert [(t.key.file, t.key.line, t.stats.count, t.stats.bytes) for t in v.sites] == [("pkg/model.py", 10, 2, 200), ("pkg/model.py", 20, 1, 100)]


def test_headroom_loosens_the_limit():
    trace = _trace(*[_copy(i) for i in range(11)])  # 11 copies
    # floor(10 * 1.10) = 11 allowed: passes; floor(10 * 1.05) = 10: fails.
    assert check(trace, _budget(Rule("r", Selection(), max_copies=Limit(10, 10.0))), ROOT).ok
    result = check(trace, _budget(Rule("r", Selection(), max_copies=Limit(10, 5.0))), ROOT)
    assert result.violations[0].message == "r (all copies): 11 copies, over the limit of 10 = 10 + 5% headroom"


def test_max_bytes_counts_noop_copies_as_zero_bytes():
    trace = _trace(_copy(1, 300), _copy(2, 200), _copy(3, 1000, noop=True))  # 300 + 200 + 0 = 500 bytes, 3 copies
    assert check(trace, _budget(Rule("r", Selection(), max_bytes=Limit(500))), ROOT).ok
    result = check(trace, _budget(Rule("r", Selection(), max_bytes=Limit(499), max_copies=Limit(2))), ROOT)
    assert [(v.measure, v.actual, v.allowed) for v in result.violations] == [("copies", 3, 2), ("bytes", 500, 499)]
    assert result.rules[0].bytes == 500


def test_max_eliminable_needs_verdicts():
    judged = _trace(_copy(1, verdict="fresh-temporary"), _copy(2, verdict="needed"), _copy(3, verdict="noop"))  # 2 eliminable
    assert check(judged, _budget(Rule("r", Selection(), max_eliminable=Limit(2))), ROOT).ok
    result = check(judged, _budget(Rule("r", Selection(), max_eliminable=Limit(1))), ROOT)
    (v,) = result.violations
    assert (v.measure, v.actual) == ("eliminable", 2)
    assert [t.key.line for t in v.sites] == [1, 3]  # only the eliminable sites are blamed
    unjudged = _trace(_copy(1), _copy(2))
    result = check(unjudged, _budget(Rule("r", Selection(), max_eliminable=Limit(0))), ROOT)
    assert result.ok
    assert result.rules[0].eliminable is None
    assert result.notes == ("max_eliminable not checked: the trace carries no verdicts (trace it with a copyhunt that judges copies)",)


def test_allowlist_takes_copies_out_of_every_rule():
    trace = _trace(_copy(1, 64, kind="h2d", file="/repo/pkg/tokenizer.py"), _copy(2, 64, kind="h2d"), _copy(3, 8, kind="d2d"))
    allow = (Allow(Selection(site="*/tokenizer.py"), "ids go up once per step"),)
    budget = _budget(Rule("h2d", Selection(kinds=("h2d",)), max_copies=Limit(1)), Rule("all", Selection(), max_copies=Limit(2)), allow=allow)
    result = check(trace, budget, ROOT)
    assert result.ok  # 1 h2d copy counted (<= 1), 2 in all (<= 2)
    assert [(a.copies, a.bytes) for a in result.allowed] == [(1, 64)]
    assert [(r.copies, r.bytes) for r in result.rules] == [(1, 64), (2, 72)]
    assert not check(trace, _budget(*budget.rules), ROOT).ok  # without the allowlist: 2 h2d > 1


def test_incomplete_trace_is_noted():
    result = check(_trace(complete=False), _budget(Rule("r", Selection(), max_copies=Limit(0))), ROOT)
    assert result.ok
    assert result.notes == ("the trace is incomplete (target raised ValueError): counts are a lower bound",)


def test_check_increase_per_site():
    base = _trace(_copy(10), _copy(20, 400))
    same = _trace(_copy(10), _copy(20, 400))
    assert check_increase(same, base, ROOT) == ()
    fewer = _trace(_copy(20, 400))
    assert check_increase(fewer, base, ROOT) == ()  # removing copies never fails
    grown = _trace(_copy(10), _copy(10), _copy(20, 400), _copy(30, 8))
    vs = check_increase(grown, base, ROOT)
    assert [v.message for v in vs] == [  # new sites first, as the diff lists them
        "pkg/model.py:30 forward aten.copy_.default d2d: 0 -> 1 copies, 0 -> 8 bytes (new site)",
        "pkg/model.py:10 forward aten.copy_.default d2d: 1 -> 2 copies, 100 -> 200 bytes",
    ]
    bigger = _trace(_copy(10), _copy(20, 800))  # same count, more bytes: grew
    assert [v.sites[0].key.line for v in check_increase(bigger, base, ROOT)] == [20]
    # Device time alone never counts as growth (too noisy to gate on).
    timed = _trace(_copy(10), _copy(20, 400, timing=DeviceTiming("Memcpy DtoD", 99.0, 400)))
    assert check_increase(timed, base, ROOT) == ()



def test_a_trace_without_verdicts_is_judged_when_its_ops_allow():
    # No ops and ops_complete=False (an imported profiler file): nothing to judge with, so not judged.
    unjudged = _trace(_copy(1))
    assert check(unjudged, _budget(Rule("r", Selection(), max_eliminable=Limit(0))), ROOT).rules[0].eliminable is None
    # The same copy from a full hunt (ops_complete): the gate judges it first ("needed": no op records).
    judged = trace(_copy(1), meta=TraceMeta(ops_complete=True))
    result = check(judged, _budget(Rule("r", Selection(), max_eliminable=Limit(0))), ROOT)
    assert result.ok and result.rules[0].eliminable == 0 and result.notes == ()


def _proved(line: int, verdict: str, status: str | None) -> Copy:
    from copyhunt.records import Verification

    return _copy(line, verdict=verdict, verification=None if status is None else Verification(status, "d"))


def test_max_refuted_and_max_verified_count_the_re_run_results_exactly_at_the_boundary():
    # 2 refuted and 3 verified eliminable copies; a refuted status on a 'needed' copy cannot happen and
    # is not counted; an eliminable copy whose site was not re-run counts for neither.
    trace = _trace(
        _proved(1, "dead-store", "refuted"), _proved(2, "fresh-temporary", "refuted"),
        _proved(3, "dead-store", "verified"), _proved(3, "dead-store", "verified"), _proved(4, "noop", "verified"),
        _proved(5, "needed", "refuted"), _proved(6, "dead-store", None), _proved(7, "dead-store", "not-testable"),
    )
    at = check(trace, _budget(Rule("proof", Selection(), max_refuted=Limit(2), max_verified=Limit(3))), ROOT)
    assert at.ok and (at.rules[0].refuted, at.rules[0].verified) == (2, 3)
    over = check(trace, _budget(Rule("proof", Selection(), max_refuted=Limit(1), max_verified=Limit(2))), ROOT)
    assert [(v.measure, v.actual, v.allowed) for v in over.violations] == [("refuted", 2, 1), ("verified", 3, 2)]
    assert over.violations[0].message == "proof (all copies): 2 refuted eliminable copies, over the limit of 1"
    assert [(t.key.line, t.stats.count) for t in over.violations[1].sites] == [(3, 2), (4, 1)]


def test_max_refuted_on_an_unverified_trace_is_not_checked_and_says_so():
    result = check(_trace(_copy(1, verdict="dead-store")), _budget(Rule("proof", Selection(), max_refuted=Limit(0))), ROOT)
    assert result.ok and result.rules[0].refuted is None
    assert result.notes == ("max_refuted not checked: the trace was not verified (make it with copyhunt verify)",)
