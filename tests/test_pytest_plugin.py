"""The pytest plugin, driven with pytester: limits at the boundary, kinds, regions, the fixture, the cache."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# Each `y.copy_(x)` between two CPU tensors of 4 float32 is one d2d copy of 16 bytes.
COPIES = """
import pytest
import torch
import copyhunt

def make(n):
    x, y = torch.ones(4), torch.zeros(4)
    for _ in range(n):
        y.copy_(x)  # the copy line

{tests}
"""


@pytest.fixture(autouse=True, scope="module")
def _warm_tracer() -> None:
    """Run one hunt in this process before any in-process pytester run.

    pytester's inline runs drop every module first imported during the inner run; torch registers
    C++ op libraries on import (torch._dynamo, pulled in lazily under a dispatch mode) and cannot
    register them twice. Importing them here keeps them out of the inner runs' bookkeeping.
    """
    import torch

    import copyhunt

    with copyhunt.hunt():
        with copyhunt.region("warm"):
            torch.ones(2).clone().copy_(torch.zeros(2))


def _write(pytester: pytest.Pytester, tests: str) -> None:
    pytester.makepyfile(test_inner=COPIES.format(tests=tests))


def test_limit_at_the_boundary_passes_and_one_less_fails(pytester):
    _write(pytester, """
@pytest.mark.limit_copies(3)
def test_at_limit():
    make(3)

@pytest.mark.limit_copies(2)
def test_over_limit():
    make(3)
""")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    # The failure names the count, the limit and the offending site with its source line.
    result.stdout.fnmatch_lines([
        "*copyhunt: 3 d2d copies, over the limit of 2:",
        "*test_inner.py:8 make  aten.copy_.default d2d  3 copies, 48 B",  # line 8 of the file: the copy line
        "*8 | y.copy_(x)  # the copy line",
        "FAILED test_inner.py::test_over_limit*",
    ])


def test_kind_and_region_select_what_counts(pytester):
    _write(pytester, """
@pytest.mark.limit_copies(0, kind="h2d")
def test_d2d_do_not_count_as_h2d():
    make(2)

@pytest.mark.limit_copies(0, kind=["h2d", "d2h"])
def test_list_of_kinds():
    make(1)

@pytest.mark.limit_copies(1, kind=None)
def test_every_kind():
    make(2)

@pytest.mark.limit_copies(1, region="moe")
def test_region_inside():
    make(3)  # outside the region: not counted
    with copyhunt.region("model"):
        with copyhunt.region("moe"):
            make(1)

@pytest.mark.limit_copies(1, region="moe")
def test_region_inside_over():
    with copyhunt.region("moe"):
        make(2)
""")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*copyhunt: 2 copies, over the limit of 1:*"])  # test_every_kind
    result.stdout.fnmatch_lines(["*copyhunt: 2 d2d copies in region moe, over the limit of 1:*"])
    result.stdout.fnmatch_lines(["FAILED*test_every_kind*", "FAILED*test_region_inside_over*"])


def test_a_raising_test_reports_its_own_error(pytester):
    _write(pytester, """
@pytest.mark.limit_copies(0)
def test_raises():
    make(5)
    raise ValueError("the test's own failure")
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: the test's own failure*"])
    result.stdout.no_fnmatch_line("*over the limit*")


def test_fixture_setup_copies_are_not_counted(pytester):
    _write(pytester, """
@pytest.fixture
def warm():
    make(10)

@pytest.mark.limit_copies(1)
def test_body_only(warm):
    make(1)
""")
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("limit_copies(-1)", "N must be an integer >= 0, got -1"),
        ("limit_copies('3')", "N must be an integer >= 0, got '3'"),
        ("limit_copies(True)", "N must be an integer >= 0, got True"),
        ("limit_copies(1, kind='gpu')", "kind 'gpu' is not a copy kind (valid: d2d, h2d, d2h, p2p)"),
        ("limit_copies(1, region='')", "region must be a non-empty string (a glob), got ''"),
        ("limit_copies()", "missing 1 required positional argument: 'n'; usage: limit_copies(N, kind='d2d', region=None, site=None, op=None)"),
        ("limit_copies(1, kinds='d2d')", "got an unexpected keyword argument 'kinds'"),
        ("limit_copies(1, 'd2d', None, None, 5)", "takes from 1 to 4 positional arguments but 5 were given"),
    ],
)
def test_bad_marker_arguments_fail_at_collection(pytester, marker, message):
    _write(pytester, f"""
@pytest.mark.{marker}
def test_bad():
    make(1)

def test_fine():
    pass
""")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # nothing ran
    result.stderr.fnmatch_lines([f"*test_inner.py::test_bad: bad @pytest.mark.limit_copies: {message}*"])
    result.assert_outcomes()


def test_marker_is_registered_for_strict_markers(pytester):
    _write(pytester, """
@pytest.mark.limit_copies(1)
def test_ok():
    make(1)
""")
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_fixture_limit_and_count(pytester):
    _write(pytester, """
def test_block_at_limit(copyhunt):
    make(5)  # outside the block: not counted
    with copyhunt.limit_copies(2) as h:
        make(2)
    assert copyhunt.count(h.trace) == 2
    assert copyhunt.count(h.trace, kind="h2d") == 0

def test_block_over_limit(copyhunt):
    with copyhunt.limit_copies(1, kind="d2d"):
        make(2)

def test_hunt(copyhunt):
    with copyhunt.hunt() as h:
        make(3)
        with copyhunt.region("moe"):
            make(1)
    assert [c.bytes for c in h.copies] == [16, 16, 16, 16]
    assert copyhunt.count(h.trace, region="moe") == 1
""")
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*copyhunt: 2 d2d copies, over the limit of 1:*", "FAILED*test_block_over_limit*"])


def test_fail_on_increase_against_the_cache(pytester):
    test = """
@pytest.mark.limit_copies(10)
def test_grows():
    make({n})
"""
    _write(pytester, test.format(n=2))
    pytester.runpytest().assert_outcomes(passed=1)  # stores 2 in the cache
    _write(pytester, test.format(n=3))
    pytester.runpytest().assert_outcomes(passed=1)  # within the limit; no flag: passes, stores 3
    _write(pytester, test.format(n=4))
    result = pytester.runpytest("--copyhunt-fail-on-increase")
    result.assert_outcomes(failed=1)  # 4 > 3 of the last passing run
    result.stdout.fnmatch_lines(["*copyhunt: 4 d2d copies, up from 3 in the last passing run:*"])
    # The failed run did not become the new baseline: still 3, so 4 fails again and 3 passes.
    pytester.runpytest("--copyhunt-fail-on-increase").assert_outcomes(failed=1)
    _write(pytester, test.format(n=3))
    pytester.runpytest("--copyhunt-fail-on-increase").assert_outcomes(passed=1)


def test_unmarked_suites_never_import_torch(pytester):
    # Installed means active in every project: a suite without markers must not pay for torch.
    # The option is accepted only if the plugin loaded (from its pytest11 entry point).
    pytester.makepyfile(test_plain="import sys\n\ndef test_a():\n    assert 'torch' not in sys.modules\n")
    result = pytester.runpytest_subprocess("--copyhunt-fail-on-increase", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_failure_lists_verdict_suggestion_and_the_test_line(pytester):
    # The copy is made in a helper module; the failure names it, its verdict and suggestion, and the
    # line of the test that called the helper.
    pytester.makepyfile(model="""
import torch

def step(x):
    t = x + 1
    return t.clone()
""")
    pytester.makepyfile(test_inner="""
import pytest
import torch
from model import step

@pytest.mark.limit_copies(0)
def test_over():
    x = torch.ones(4)
    y = step(x)
    assert y.sum() == 8
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "copyhunt: 1 d2d copy, over the limit of 0:",  # (makepyfile drops the leading newline: lines from 1)
        "  model.py:5 step  aten.clone.default d2d  1 copy, 16 B",
        "        5 | return t.clone()",
        "      verdict: fresh-temporary - source (a fresh 16 B buffer made by aten.add.Tensor at model.py:4) is read only*",
        "      fix: drop this copy and use the result of aten.add.Tensor at model.py:4 itself*",
        "      called from test_inner.py:8 | y = step(x)",
    ])
