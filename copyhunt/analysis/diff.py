"""Compare two traces site by site: what was added, removed, or changed (count, bytes, device time).

A site key is ``(file, line, function, op, kind)`` with the file shown relative to a root (the current
directory by default; the part after ``site-packages/`` for installed code), so that the same code traced
on two machines or in two checkouts gets the same key. A copy that moved to another line is a different
site: it shows as one removed and one added. Pure functions; nothing here prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from copyhunt.records import Copy, CopyRecord, is_eliminable
from copyhunt.text import NO_SITE, display_path
from copyhunt.view import TraceView

UNKNOWN_FILE = "<unknown>"

#: Change statuses, in the order reports list them.
STATUSES = ("added", "removed", "changed", "same")


@dataclass(frozen=True, order=True)
class SiteKey:
    """What makes a copy site the same site in another trace."""

    file: str
    line: int
    function: str
    op: str
    kind: str
    # The site's source text as the trace recorded it (not part of the identity: traces taken before
    # copyhunt recorded it still match).
    source_text: str | None = field(default=None, compare=False)

    def short(self) -> str:
        """``path:line function``, as the tables show a site (``(no source site)`` when unknown)."""
        if self.file == UNKNOWN_FILE:
            return NO_SITE
        return f"{self.file}:{self.line} {self.function}"


@dataclass(frozen=True)
class SiteStats:
    """What one site did in one trace."""

    count: int = 0
    bytes: int = 0
    device_us: float | None = None  # None: no copy of this site had device timing
    eliminable: int = 0  # copies judged eliminable (0 when the trace has no verdicts)


def site_key(copy: Copy | CopyRecord, root: str | os.PathLike[str] | None = None) -> SiteKey:
    """The stable key of a copy's site (file relative to ``root``)."""
    if copy.site is None:
        return SiteKey(UNKNOWN_FILE, 0, "", copy.op, copy.kind)
    return SiteKey(display_path(copy.site.file, root), copy.site.line, copy.site.function, copy.op, copy.kind,
                   copy.site.source_text)


def site_stats(copies: Iterable[Copy], root: str | os.PathLike[str] | None = None) -> dict[SiteKey, SiteStats]:
    """Tally copies per site key; keys in sorted order so results are deterministic."""
    acc: dict[SiteKey, list] = {}
    for c in copies:
        k = site_key(c, root)
        a = acc.setdefault(k, [0, 0, None, 0])
        a[0] += 1
        a[1] += c.moved_bytes
        if c.device is not None:
            a[2] = (a[2] or 0.0) + c.device.time_us
        a[3] += is_eliminable(c.verdict)
    return {k: SiteStats(*acc[k]) for k in sorted(acc)}


@dataclass(frozen=True)
class SiteChange:
    """One site compared across two traces."""

    key: SiteKey
    status: str  # one of STATUSES
    before: SiteStats
    after: SiteStats

    @property
    def grew(self) -> bool:
        """More copies or more bytes than before (device time is too noisy to gate on)."""
        return self.after.count > self.before.count or self.after.bytes > self.before.bytes

    @property
    def count_delta(self) -> int:
        """after.count - before.count."""
        return self.after.count - self.before.count

    @property
    def bytes_delta(self) -> int:
        """after.bytes - before.bytes."""
        return self.after.bytes - self.before.bytes

    @property
    def device_delta_us(self) -> float | None:
        """Device time difference when both sides were timed (a missing side counts as 0 us)."""
        if self.before.device_us is None and self.after.device_us is None:
            return None
        return (self.after.device_us or 0.0) - (self.before.device_us or 0.0)


@dataclass(frozen=True)
class TraceDiff:
    """Every site of two traces with its change, plus the totals."""

    changes: tuple[SiteChange, ...]
    before: SiteStats  # totals of trace A
    after: SiteStats  # totals of trace B

    def by_status(self, status: str) -> tuple[SiteChange, ...]:
        """The changes with that status, in report order."""
        return tuple(c for c in self.changes if c.status == status)

    @property
    def grown(self) -> tuple[SiteChange, ...]:
        """Sites with more copies or bytes than before (added sites included)."""
        return tuple(c for c in self.changes if c.grew)


def _totals(stats: dict[SiteKey, SiteStats]) -> SiteStats:
    timed = [s.device_us for s in stats.values() if s.device_us is not None]
    return SiteStats(
        count=sum(s.count for s in stats.values()),
        bytes=sum(s.bytes for s in stats.values()),
        device_us=sum(timed) if timed else None,
        eliminable=sum(s.eliminable for s in stats.values()),
    )


def diff_traces(a: TraceView, b: TraceView, root: str | os.PathLike[str] | None = None) -> TraceDiff:
    """Compare the copies of view ``a`` (before) with those of ``b`` (after), per site key."""
    sa, sb = site_stats(a.copies, root), site_stats(b.copies, root)
    empty = SiteStats()
    changes = []
    for key in sorted(set(sa) | set(sb)):
        before, after = sa.get(key, empty), sb.get(key, empty)
        if key not in sa:
            status = "added"
        elif key not in sb:
            status = "removed"
        elif (before.count, before.bytes, before.device_us) != (after.count, after.bytes, after.device_us):
            status = "changed"
        else:
            status = "same"
        changes.append(SiteChange(key, status, before, after))
    # Report order: status, then the biggest byte change first, then the key (deterministic).
    changes.sort(key=lambda c: (STATUSES.index(c.status), -abs(c.bytes_delta), -abs(c.count_delta), c.key))
    return TraceDiff(changes=tuple(changes), before=_totals(sa), after=_totals(sb))
