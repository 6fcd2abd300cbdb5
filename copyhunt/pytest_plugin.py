"""pytest plugin (pytest11 entry point ``copyhunt``): copy limits on tests, like pytest-memray's limit_memory.

- ``@pytest.mark.limit_copies(N, kind="d2d", region=None, site=None, op=None)`` traces the test's call
  (not its fixtures) and fails it when more than N matching copies ran, listing the offending sites.
  ``kind`` is one of d2d/h2d/d2h/p2p, a list of them, or None for every kind; ``region``, ``site`` and
  ``op`` are globs: the same selection (``copyhunt.selection``) as a budget file or ``--kind`` /
  ``--region``. Bad arguments fail at collection.
- The ``copyhunt`` fixture: ``with copyhunt.limit_copies(N, kind=...):`` around a block, and
  ``copyhunt.hunt(...)`` for your own assertions.
- ``--copyhunt-fail-on-increase``: a marked test also fails when it made more matching copies than
  in its last passing run (counts kept in the pytest cache, ``.pytest_cache``).

Installed means active, so this module imports only pytest and the standard library: torch and the
tracer load the first time a marked test or the fixture runs.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from copyhunt.hunting import Hunt
    from copyhunt.records import Copy, Trace
    from copyhunt.selection import Selection

MARKER = "limit_copies"
CACHE_KEY = "copyhunt/copy-counts"
#: How many offending sites a failure lists.
MAX_SITES = 10


@dataclass(frozen=True)
class CopyLimit:
    """A validated ``limit_copies`` marker: at most ``n`` of the copies ``selection`` is about."""

    n: int
    selection: "Selection"

    def describe(self) -> str:
        """``d2d copies in region moe`` - the words a failure uses."""
        return self.selection.words()


def _marker_spec(n: Any, kind: Any = "d2d", region: Any = None, site: Any = None, *, op: Any = None) -> CopyLimit:
    # The signature does the arity / keyword checking; values are checked here (the selection
    # module validates kinds and globs for every front end alike).
    from copyhunt.selection import Selection, SelectionError

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"N must be an integer >= 0, got {n!r}")
    try:
        return CopyLimit(n, Selection.parse(kinds=kind, region=region, site=site, op=op))
    except SelectionError as exc:
        raise ValueError(str(exc)) from None


def parse_limit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> CopyLimit:
    """Validate marker arguments; ValueError with one line saying what is valid."""
    try:
        return _marker_spec(*args, **kwargs)
    except TypeError as exc:
        # e.g. "got an unexpected keyword argument 'kinds'" / "missing 1 required positional argument"
        detail = str(exc).replace("_marker_spec() ", "")
        raise ValueError(f"{detail}; usage: limit_copies(N, kind='d2d', region=None, site=None, op=None)") from None


_LIMIT = pytest.StashKey[CopyLimit]()
_COUNTS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--copyhunt-fail-on-increase``."""
    group = parser.getgroup("copyhunt", "copy limits (copyhunt)")
    group.addoption(
        "--copyhunt-fail-on-increase",
        action="store_true",
        default=False,
        help="fail a limit_copies test that makes more copies than in its last passing run (pytest cache)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker so ``--strict-markers`` projects accept it."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(n, kind='d2d', region=None, site=None, op=None): fail the test when its code makes more than n such tensor copies (copyhunt)",
    )
    config.stash[_COUNTS] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every limit_copies marker now, so a bad one fails the collection, not the test."""
    errors = []
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        try:
            item.stash[_LIMIT] = parse_limit(marker.args, dict(marker.kwargs))
        except ValueError as exc:
            errors.append(f"{item.nodeid}: bad @pytest.mark.{MARKER}: {exc}")
    if errors:
        raise pytest.UsageError("\n".join(errors))


def _select(trace: "Trace", limit: CopyLimit) -> "list[Copy]":
    # Counting needs no verdicts: the trace is viewed as captured (judging would cost every marked test).
    from copyhunt.view import view

    return list(view(trace, limit.selection).copies)


def format_sites(copies: "list[Copy]", max_sites: int = MAX_SITES, test_file: str | None = None) -> list[str]:
    """Lines naming each site (worst first): count, bytes, source text, verdict, suggestion, test line.

    Verdicts show when the copies were judged (a failing limit judges them); ``test_file`` names the
    test's file, whose innermost frame in a copy's stack is the test line that made the call.
    """
    from copyhunt.analysis.diff import site_key, site_stats
    from copyhunt.report.gate_report import site_source
    from copyhunt.validation import source_line  # the test's own file (this process traced it): a regular, size-limited file
    from copyhunt.text import human_bytes

    stats = site_stats(copies)
    ranked = sorted(stats.items(), key=lambda kv: (-kv[1].count, -kv[1].bytes, kv[0]))
    first: dict[Any, "Copy"] = {}
    for c in copies:
        first.setdefault(site_key(c), c)
    lines = []
    for key, s in ranked[:max_sites]:
        lines.append(f"  {key.short()}  {key.op} {key.kind}  {s.count} {'copy' if s.count == 1 else 'copies'}, {human_bytes(s.bytes)}")
        src = site_source(key)
        if src is not None:
            lines.append(f"    {key.line:>5} | {src}")
        c = first[key]
        if c.verdict is not None:
            lines.append(f"      verdict: {c.verdict}" + (f" - {c.reason}" if c.reason else ""))
            if c.suggestion:
                lines.append(f"      fix: {c.suggestion}")
        call = _test_frame(c, test_file)
        if call is not None and (call.file, call.line) != (c.site.file if c.site else None, key.line):
            text = source_line(call.file, call.line)
            lines.append(f"      called from {_short(call.file)}:{call.line}" + (f" | {text}" if text else ""))
    if len(ranked) > max_sites:
        lines.append(f"  ... and {len(ranked) - max_sites} more sites")
    return lines


def _test_frame(copy: "Copy", test_file: str | None) -> Any:
    """The innermost frame of ``copy``'s stack in the test's own file, or None."""
    import os

    if test_file is None:
        return None
    want = os.path.realpath(test_file)
    frames = [copy.site, *copy.stack] if copy.site is not None else list(copy.stack)
    for f in frames:
        if f is not None and os.path.realpath(f.file) == want:
            return f
    return None


def _short(path: str) -> str:
    from copyhunt.text import display_path

    return display_path(path)


def limit_failure(copies: "list[Copy]", limit: CopyLimit, test_file: str | None = None) -> str | None:
    """None within the limit, else the failure message (one headline, then the sites)."""
    if len(copies) <= limit.n:
        return None
    from copyhunt.text import visible

    head = f"copyhunt: {limit.selection.words(len(copies))}, over the limit of {limit.n}:"
    # Site names and source text are shown as data: no ESC sequence of a file name reaches the terminal.
    return "\n".join([head, *(visible(line) for line in format_sites(copies, test_file=test_file))])


def _judged(trace: "Trace", limit: CopyLimit) -> "list[Copy]":
    """The selected copies with their verdicts (judged only when a limit failed: judging costs)."""
    from copyhunt.analysis import ensure_judged

    return _select(ensure_judged(trace), limit)


@contextmanager
def _traced() -> "Iterator[Hunt]":
    from copyhunt.hunting import hunt

    with hunt() as h:
        yield h


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Trace the test body of a marked test; fail it when over its limit (or grown, when asked)."""
    limit = item.stash.get(_LIMIT, None)
    if limit is None:
        return (yield)
    with _traced() as h:
        result = yield  # a raising test raises here: its own failure wins, nothing is checked
    copies = _select(h.trace, limit)
    if len(copies) > limit.n:
        message = limit_failure(_judged(h.trace, limit), limit, test_file=str(item.path))
        pytest.fail(message, pytrace=False)
    config = item.config
    nbytes = sum(c.moved_bytes for c in copies)
    if config.getoption("copyhunt_fail_on_increase"):
        last = _cache(config).get(item.nodeid)
        if last is not None and last.get("what") == limit.describe() and len(copies) > last.get("count", 0):
            lines = [f"copyhunt: {limit.selection.words(len(copies))}, up from {last['count']} in the last passing run:",
                     *format_sites(_judged(h.trace, limit), test_file=str(item.path))]
            pytest.fail("\n".join(lines), pytrace=False)
    config.stash[_COUNTS][item.nodeid] = {"what": limit.describe(), "count": len(copies), "bytes": nbytes}
    return result


def _cache(config: pytest.Config) -> dict[str, Any]:
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    if cache is None:
        return {}
    value = cache.get(CACHE_KEY, {})
    return value if isinstance(value, dict) else {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Store the counts of the tests that passed, as the baseline of the next run."""
    config = session.config
    counts = config.stash.get(_COUNTS, {})
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    if counts and cache is not None:
        merged = _cache(config)
        merged.update(counts)
        cache.set(CACHE_KEY, merged)


class CopyhuntFixture:
    """What the ``copyhunt`` fixture gives a test: limits and hunts around blocks of code."""

    @contextmanager
    def limit_copies(self, n: int, kind: Any = "d2d", region: str | None = None, site: str | None = None,
                     op: str | None = None) -> "Iterator[Hunt]":
        """Fail the test when the block makes more than ``n`` matching copies."""
        try:
            limit = parse_limit((n,), {"kind": kind, "region": region, "site": site, "op": op})
        except ValueError as exc:
            raise pytest.UsageError(f"copyhunt.limit_copies: {exc}") from None
        caller = sys._getframe(2).f_code.co_filename  # the test's file: contextlib's __enter__ called us
        with _traced() as h:
            yield h
        if len(_select(h.trace, limit)) > limit.n:
            pytest.fail(limit_failure(_judged(h.trace, limit), limit, test_file=caller) or "", pytrace=False)

    def hunt(self, **kwargs: Any) -> "Hunt":
        """``copyhunt.hunt(**kwargs)``: trace a block and assert on ``.trace`` / ``.copies`` yourself."""
        from copyhunt.hunting import hunt

        return hunt(**kwargs)

    def region(self, name: str) -> Any:
        """``copyhunt.region(name)``: label a block so a ``region=`` limit can select it."""
        from copyhunt.capture.regions import region

        return region(name)

    def count(self, trace: "Trace", kind: Any = "d2d", region: str | None = None, site: str | None = None,
              op: str | None = None) -> int:
        """How many copies of a trace match, with the marker's meaning of kind / region / site / op."""
        limit = parse_limit((0,), {"kind": kind, "region": region, "site": site, "op": op})
        return len(_select(trace, limit))


@pytest.fixture
def copyhunt() -> CopyhuntFixture:
    """Limit or count the tensor copies of a block: ``with copyhunt.limit_copies(0): f(x)``."""
    return CopyhuntFixture()
