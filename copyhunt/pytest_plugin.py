"""pytest plugin (pytest11 entry point ``copyhunt``): copy limits on tests, like pytest-memray's limit_memory.

- ``@pytest.mark.limit_copies(N, kind="d2d", region=None, site=None)`` traces the test's call (not its
  fixtures) and fails it when more than N matching copies ran, listing the offending sites.
  ``kind`` is one of d2d/h2d/d2h/p2p, a list of them, or None for every kind; ``region`` and ``site``
  are globs with the same meaning as in a budget file. Bad arguments fail at collection.
- The ``copyhunt`` fixture: ``with copyhunt.limit_copies(N, kind=...):`` around a block, and
  ``copyhunt.hunt(...)`` for your own assertions.
- ``--copyhunt-fail-on-increase``: a marked test also fails when it made more matching copies than
  in its last passing run (counts kept in the pytest cache, ``.pytest_cache``).

Installed means active, so this module imports only pytest and the standard library: torch and the
tracer load the first time a marked test or the fixture runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from copyhunt.hunt import Hunt
    from copyhunt.records import CopyRecord, Trace

MARKER = "limit_copies"
CACHE_KEY = "copyhunt/copy-counts"
#: How many offending sites a failure lists.
MAX_SITES = 10


@dataclass(frozen=True)
class CopyLimit:
    """A validated ``limit_copies`` marker: at most ``n`` copies of ``kinds`` in ``region`` / ``site``."""

    n: int
    kinds: tuple[str, ...] | None = ("d2d",)
    region: str | None = None
    site: str | None = None

    def describe(self) -> str:
        """``d2d copies in region moe`` - the words a failure uses."""
        what = "copies" if self.kinds is None else f"{'/'.join(self.kinds)} copies"
        if self.region is not None:
            what += f" in region {self.region}"
        if self.site is not None:
            what += f" at {self.site}"
        return what


def _marker_spec(n: Any, kind: Any = "d2d", region: Any = None, site: Any = None) -> CopyLimit:
    # The signature does the arity / keyword checking; values are checked here.
    from copyhunt.records import COPY_KINDS

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"N must be an integer >= 0, got {n!r}")
    if kind is None:
        kinds = None
    else:
        items = [kind] if isinstance(kind, str) else kind
        if not isinstance(items, (list, tuple)) or not items or any(k not in COPY_KINDS for k in items):
            raise ValueError(f"kind must be one of {', '.join(COPY_KINDS)}, a list of them, or None (every kind), got {kind!r}")
        kinds = tuple(dict.fromkeys(items))
    for name, value in (("region", region), ("site", site)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{name} must be a non-empty glob string or None, got {value!r}")
    return CopyLimit(n, kinds, region, site)


def parse_limit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> CopyLimit:
    """Validate marker arguments; ValueError with one line saying what is valid."""
    try:
        return _marker_spec(*args, **kwargs)
    except TypeError as exc:
        # e.g. "got an unexpected keyword argument 'kinds'" / "missing 1 required positional argument"
        detail = str(exc).replace("_marker_spec() ", "")
        raise ValueError(f"{detail}; usage: limit_copies(N, kind='d2d', region=None, site=None)") from None


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
        f"{MARKER}(n, kind='d2d', region=None, site=None): fail the test when its code makes more than n such tensor copies (copyhunt)",
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


def _select(copies: "tuple[CopyRecord, ...]", limit: CopyLimit) -> "list[CopyRecord]":
    from copyhunt.gate.budget import Selector
    from copyhunt.gate.check import selects

    sel = Selector(kinds=limit.kinds, region=limit.region, site=limit.site)
    return [c for c in copies if selects(sel, c)]


def format_sites(copies: "list[CopyRecord]", max_sites: int = MAX_SITES) -> list[str]:
    """Lines naming each site (worst first) with its count, bytes and source text."""
    from copyhunt.analysis.diff import site_stats
    from copyhunt.report.gate_report import source_line
    from copyhunt.text import human_bytes

    ranked = sorted(site_stats(copies).items(), key=lambda kv: (-kv[1].count, -kv[1].bytes, kv[0]))
    lines = []
    for key, s in ranked[:max_sites]:
        lines.append(f"  {key.short()}  {key.op} {key.kind}  {s.count} {'copy' if s.count == 1 else 'copies'}, {human_bytes(s.bytes)}")
        src = source_line(key.file, key.line)
        if src is not None:
            lines.append(f"    {key.line:>5} | {src}")
    if len(ranked) > max_sites:
        lines.append(f"  ... and {len(ranked) - max_sites} more sites")
    return lines


def limit_failure(copies: "list[CopyRecord]", limit: CopyLimit) -> str | None:
    """None within the limit, else the failure message (one headline, then the sites)."""
    if len(copies) <= limit.n:
        return None
    head = f"copyhunt: {len(copies)} {limit.describe()}, over the limit of {limit.n}:"
    return "\n".join([head, *format_sites(copies)])


@contextmanager
def _traced(kinds: tuple[str, ...] | None) -> "Iterator[Hunt]":
    from copyhunt.hunt import hunt

    with hunt(kinds=kinds) as h:
        yield h


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Trace the test body of a marked test; fail it when over its limit (or grown, when asked)."""
    limit = item.stash.get(_LIMIT, None)
    if limit is None:
        return (yield)
    with _traced(limit.kinds) as h:
        result = yield  # a raising test raises here: its own failure wins, nothing is checked
    copies = _select(h.trace.copies, limit)
    message = limit_failure(copies, limit)
    if message is not None:
        pytest.fail(message, pytrace=False)
    config = item.config
    nbytes = sum(c.moved_bytes for c in copies)
    if config.getoption("copyhunt_fail_on_increase"):
        last = _cache(config).get(item.nodeid)
        if last is not None and last.get("what") == limit.describe() and len(copies) > last.get("count", 0):
            lines = [f"copyhunt: {len(copies)} {limit.describe()}, up from {last['count']} in the last passing run:", *format_sites(copies)]
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
    def limit_copies(self, n: int, kind: Any = "d2d", region: str | None = None, site: str | None = None) -> "Iterator[Hunt]":
        """Fail the test when the block makes more than ``n`` matching copies."""
        try:
            limit = parse_limit((n,), {"kind": kind, "region": region, "site": site})
        except ValueError as exc:
            raise pytest.UsageError(f"copyhunt.limit_copies: {exc}") from None
        with _traced(limit.kinds) as h:
            yield h
        message = limit_failure(_select(h.trace.copies, limit), limit)
        if message is not None:
            pytest.fail(message, pytrace=False)

    def hunt(self, **kwargs: Any) -> "Hunt":
        """``copyhunt.hunt(**kwargs)``: trace a block and assert on ``.trace`` / ``.copies`` yourself."""
        from copyhunt.hunt import hunt

        return hunt(**kwargs)

    def region(self, name: str) -> Any:
        """``copyhunt.region(name)``: label a block so a ``region=`` limit can select it."""
        from copyhunt.capture.regions import region

        return region(name)

    def count(self, trace: "Trace", kind: Any = "d2d", region: str | None = None, site: str | None = None) -> int:
        """How many copies of a trace match, with the marker's meaning of kind / region / site."""
        limit = parse_limit((0,), {"kind": kind, "region": region, "site": site})
        return len(_select(trace.copies, limit))


@pytest.fixture
def copyhunt() -> CopyhuntFixture:
    """Limit or count the tensor copies of a block: ``with copyhunt.limit_copies(0): f(x)``."""
    return CopyhuntFixture()
