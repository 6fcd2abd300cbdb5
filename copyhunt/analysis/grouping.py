"""Grouping copy records for display: pure, deterministic functions, no printing.

`group_copies(copies, by=...)` folds copies (``records.Copy``: record, timing, findings) into one `CopyGroup` per source site, module or
region (which copies are shown is a `copyhunt.selection.Selection`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from copyhunt.records import VERDICTS, Copy, Frame, is_eliminable, moved_bytes
from copyhunt.text import NO_SITE

class GroupBy(str, Enum):
    """What one table row stands for (``--by``)."""

    site = "site"
    module = "module"
    region = "region"


class SortBy(str, Enum):
    """Which rows come first (``report --sort``): most bytes, most copies, most device time, or by file and line."""

    bytes = "bytes"
    count = "count"
    time = "time"
    site = "site"


def sort_groups(groups: Iterable["CopyGroup"], by: SortBy | str = SortBy.bytes) -> list["CopyGroup"]:
    """``groups`` in the order ``by`` asks for; ties keep the default order (bytes, count, program order)."""
    ordered = list(groups)
    by = SortBy(by)
    if by is SortBy.count:
        ordered.sort(key=lambda g: -g.count)
    elif by is SortBy.time:
        ordered.sort(key=lambda g: -(g.device_time_us or 0.0))
    elif by is SortBy.site:
        ordered.sort(key=lambda g: (g.sites[0].file, g.sites[0].line) if g.sites else ("\uffff", 0))
    return ordered


#: The keys tables can group by, as text.
GROUP_BY = tuple(g.value for g in GroupBy)

#: Label of the group of copies that have no module / region (no site: text.NO_SITE).
NO_MODULE = "(no module)"
NO_REGION = "(no region)"


@dataclass(frozen=True)
class CopyGroup:
    """Copies that share a site (or module, or region), with their totals."""

    key: str  # "path:line function" (site), module path or region path
    count: int
    noop_count: int  # copies in `count` that moved nothing
    bytes: int  # bytes written by copies that did real work (noop copies move 0 bytes)
    ops: tuple[str, ...]  # distinct ops, sorted
    kinds: tuple[str, ...]  # distinct kinds, sorted
    device_time_us: float | None  # summed device time; None when no copy in the group has timing
    verdict: str | None  # strongest verdict in the group (records.VERDICTS order); None if unjudged
    eliminable_count: int  # copies whose verdict says they could go
    sites: tuple[Frame, ...]  # distinct source sites, in order of first appearance
    copies: tuple[Copy, ...]  # the members, in trace order


def group_key(copy: Copy, by: GroupBy | str) -> str:
    """The key of ``copy`` for grouping ``by`` site, module or region."""
    if by == "site":
        return copy.site.short() if copy.site is not None else NO_SITE
    if by == "module":
        return copy.module or NO_MODULE
    if by == "region":
        return copy.region or NO_REGION
    raise ValueError(f"cannot group by {by!r}; expected one of {', '.join(GROUP_BY)}")


def group_copies(copies: Iterable[Copy], by: GroupBy | str = GroupBy.site) -> list[CopyGroup]:
    """One group per distinct key, sorted by bytes (desc), count (desc), then first appearance in the trace."""
    if by not in GROUP_BY:
        raise ValueError(f"cannot group by {by!r}; expected one of {', '.join(GROUP_BY)}")
    members: dict[str, list[Copy]] = {}
    for copy in copies:
        members.setdefault(group_key(copy, by), []).append(copy)
    groups = [_fold(key, records) for key, records in members.items()]
    # Ties keep program order (the first copy's seq), which reads better than "m.py:10" < "m.py:9".
    groups.sort(key=lambda g: (-g.bytes, -g.count, min(c.seq for c in g.copies), g.key))
    return groups


def strongest_verdict(verdicts: Iterable[str | None]) -> str | None:
    """The strongest of ``verdicts`` by `records.VERDICTS` order (unknown names rank last)."""
    rank = {v: i for i, v in enumerate(VERDICTS)}
    present = [v for v in verdicts if v is not None]
    if not present:
        return None
    return min(present, key=lambda v: (rank.get(v, len(VERDICTS)), v))


def _fold(key: str, records: list[Copy]) -> CopyGroup:
    """Totals of one group's records."""
    timed = [c.device.time_us for c in records if c.device is not None]
    sites: dict[Frame, None] = {}
    for c in records:
        if c.site is not None:
            sites.setdefault(c.site, None)
    return CopyGroup(
        key=key,
        count=len(records),
        noop_count=sum(1 for c in records if c.noop),
        bytes=moved_bytes(records),
        ops=tuple(sorted({c.op for c in records})),
        kinds=tuple(sorted({c.kind for c in records})),
        device_time_us=sum(timed) if timed else None,
        verdict=strongest_verdict(c.verdict for c in records),
        eliminable_count=sum(1 for c in records if is_eliminable(c.verdict)),
        sites=tuple(sites),
        copies=tuple(records),
    )
