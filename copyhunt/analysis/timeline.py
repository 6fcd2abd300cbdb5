"""One storage's accesses in op order, with the lookups the verdict walks need in O(log n).

A :class:`Timeline` holds the events of one storage (free, alloc, read, write with byte ranges),
sorted by op and, inside one op, in the order free < alloc < read < write. The walks of
:class:`~copyhunt.analysis.index.TraceIndex` never step over the events one by one: they ask "the
first (or last) read overlapping these bytes between positions a and b" and jump there.

- Frees and allocations cover the whole storage: a sorted list of their positions and a bisect.
- Reads, writes, dense writes and accesses of either kind: an :class:`_Overlaps` per class. When
  every access of the class has the same byte range (a hot tensor read by every op, one tensor
  cloned again and again) the answer is one bisect; otherwise a short probe of the next few
  events, then a segment tree over the class's events holding each subtree's lowest start and
  highest end, which skips every subtree that cannot overlap the query.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Sequence

__all__ = ["Timeline", "FREE", "ALLOC", "READ", "WRITE", "WHOLE"]

FREE, ALLOC, READ, WRITE = 0, 1, 2, 3  # also the order of one op's events

WHOLE = 1 << 62  # "every byte" for alloc/free events (storages are far smaller)

_PROBE = 8  # events looked at one by one before the segment tree takes over: most answers are near

#: The event tuple the index collects: (seq, kind, start, end, dense).
RawEvent = tuple[int, int, int, int, bool]


class _Tree:
    """Segment tree over one class's events: each node keeps the lowest start and highest end below it."""

    __slots__ = ("size", "lo", "hi")

    def __init__(self, starts: Sequence[int], ends: Sequence[int]) -> None:
        size = 1
        while size < len(starts):
            size *= 2
        lo = [WHOLE] * (2 * size)  # padding leaves can never overlap anything
        hi = [-1] * (2 * size)
        lo[size:size + len(starts)] = starts
        hi[size:size + len(ends)] = ends
        for node in range(size - 1, 0, -1):
            a, b = 2 * node, 2 * node + 1
            lo[node] = lo[a] if lo[a] < lo[b] else lo[b]
            hi[node] = hi[a] if hi[a] > hi[b] else hi[b]
        self.size, self.lo, self.hi = size, lo, hi

    def first(self, a: int, b: int, s: int, e: int) -> tuple[int, int]:
        """(lowest index in ``[a, b)`` whose range overlaps ``[s, e)`` or -1, nodes visited)."""
        lo, hi = self.lo, self.hi
        stack = [(1, 0, self.size)]
        visited = 0
        while stack:
            node, nl, nr = stack.pop()  # the node covers indices [nl, nr)
            visited += 1
            if nr <= a or nl >= b or lo[node] >= e or hi[node] <= s:
                continue
            if nr - nl == 1:
                return nl, visited
            mid = (nl + nr) >> 1
            stack.append((2 * node + 1, mid, nr))
            stack.append((2 * node, nl, mid))  # popped first: leftmost answer
        return -1, visited

    def last(self, a: int, b: int, s: int, e: int) -> tuple[int, int]:
        """(highest index in ``[a, b)`` whose range overlaps ``[s, e)`` or -1, nodes visited)."""
        lo, hi = self.lo, self.hi
        stack = [(1, 0, self.size)]
        visited = 0
        while stack:
            node, nl, nr = stack.pop()
            visited += 1
            if nr <= a or nl >= b or lo[node] >= e or hi[node] <= s:
                continue
            if nr - nl == 1:
                return nl, visited
            mid = (nl + nr) >> 1
            stack.append((2 * node, nl, mid))
            stack.append((2 * node + 1, mid, nr))  # popped first: rightmost answer
        return -1, visited


class _Overlaps:
    """The events of one class (reads, writes...) of a timeline: their positions and byte ranges."""

    __slots__ = ("pos", "starts", "ends", "uniform", "_tree")

    def __init__(self, pos: list[int], starts: list[int], ends: list[int]) -> None:
        self.pos, self.starts, self.ends = pos, starts, ends
        self.uniform = not starts or (min(starts) == max(starts) and min(ends) == max(ends))
        self._tree: _Tree | None = None

    def first(self, a: int, b: int, s: int, e: int, work: list[int]) -> int:
        """Lowest timeline position in ``[a, b)`` of an event overlapping ``[s, e)``, or -1."""
        pos = self.pos
        i, j = bisect_left(pos, a), bisect_left(pos, b)
        if i >= j:
            return -1
        starts, ends = self.starts, self.ends
        if self.uniform:
            work[0] += 1
            return pos[i] if starts[i] < e and s < ends[i] else -1
        stop = min(j, i + _PROBE)
        for k in range(i, stop):
            if starts[k] < e and s < ends[k]:
                work[0] += k - i + 1
                return pos[k]
        work[0] += stop - i
        if stop == j:
            return -1
        if self._tree is None:
            self._tree = _Tree(starts, ends)
        k, visited = self._tree.first(stop, j, s, e)
        work[0] += visited
        return pos[k] if k >= 0 else -1

    def last(self, a: int, b: int, s: int, e: int, work: list[int]) -> int:
        """Highest timeline position in ``[a, b)`` of an event overlapping ``[s, e)``, or -1."""
        pos = self.pos
        i, j = bisect_left(pos, a), bisect_left(pos, b)
        if i >= j:
            return -1
        starts, ends = self.starts, self.ends
        if self.uniform:
            work[0] += 1
            return pos[j - 1] if starts[i] < e and s < ends[i] else -1
        stop = max(i, j - _PROBE)
        for k in range(j - 1, stop - 1, -1):
            if starts[k] < e and s < ends[k]:
                work[0] += j - k
                return pos[k]
        work[0] += j - stop
        if stop == i:
            return -1
        if self._tree is None:
            self._tree = _Tree(starts, ends)
        k, visited = self._tree.last(i, stop, s, e)
        work[0] += visited
        return pos[k] if k >= 0 else -1


def _next(positions: list[int], a: int, b: int) -> int:
    """Lowest of ``positions`` (sorted) in ``[a, b)``, or -1."""
    k = bisect_left(positions, a)
    return positions[k] if k < len(positions) and positions[k] < b else -1


def _prev(positions: list[int], a: int, b: int) -> int:
    """Highest of ``positions`` (sorted) in ``[a, b)``, or -1."""
    k = bisect_left(positions, b) - 1
    return positions[k] if k >= 0 and positions[k] >= a else -1


class Timeline:
    """The events of one storage in op order, as columns, with per-class lookups.

    Positions are indices into the columns. Lookups take half-open position ranges ``[a, b)`` and
    add the events and tree nodes they examined to ``work[0]`` (the index's measure of its cost).
    """

    __slots__ = ("seqs", "kinds", "starts", "ends", "dense", "frees", "allocs", "_classes", "_writers")

    def __init__(self, events: list[RawEvent]) -> None:
        seqs, kinds, starts, ends, dense = zip(*events)
        self.seqs: Sequence[int] = seqs
        self.kinds: Sequence[int] = kinds
        self.starts: Sequence[int] = starts
        self.ends: Sequence[int] = ends
        self.dense: Sequence[bool] = dense
        self.frees = [p for p, k in enumerate(kinds) if k == FREE]
        self.allocs = [p for p, k in enumerate(kinds) if k == ALLOC]
        self._classes: dict[str, _Overlaps] = {}  # built on first use
        self._writers: int | None = None

    def _overlaps(self, name: str) -> _Overlaps:
        found = self._classes.get(name)
        if found is None:
            kinds, dense = self.kinds, self.dense
            if name == "reads":
                pos = [p for p, k in enumerate(kinds) if k == READ]
            elif name == "writes":
                pos = [p for p, k in enumerate(kinds) if k == WRITE]
            elif name == "dense_writes":
                pos = [p for p, k in enumerate(kinds) if k == WRITE and dense[p]]
            else:
                pos = [p for p, k in enumerate(kinds) if k == READ or k == WRITE]
            starts, ends = self.starts, self.ends
            found = self._classes[name] = _Overlaps(pos, [starts[p] for p in pos], [ends[p] for p in pos])
        return found

    @property
    def reads(self) -> _Overlaps:
        """The read events."""
        return self._overlaps("reads")

    @property
    def writes(self) -> _Overlaps:
        """The write events, dense or strided."""
        return self._overlaps("writes")

    @property
    def dense_writes(self) -> _Overlaps:
        """The write events that write every byte of their range."""
        return self._overlaps("dense_writes")

    @property
    def accesses(self) -> _Overlaps:
        """The read and write events."""
        return self._overlaps("accesses")

    def __len__(self) -> int:
        return len(self.seqs)

    def after(self, seq: int) -> int:
        """Position of the first event of an op later than ``seq``."""
        return bisect_right(self.seqs, seq)

    def before(self, seq: int) -> int:
        """Position of the first event of op ``seq`` or later (so events before it end just before)."""
        return bisect_left(self.seqs, seq)

    def group(self, p: int) -> tuple[int, int]:
        """Positions ``[first, last]`` of the events of the op that made the event at ``p``."""
        seq = self.seqs[p]
        return bisect_left(self.seqs, seq), bisect_right(self.seqs, seq) - 1

    def next_free(self, a: int, b: int) -> int:
        """First free event in ``[a, b)``, or -1."""
        return _next(self.frees, a, b)

    def prev_free(self, a: int, b: int) -> int:
        """Last free event in ``[a, b)``, or -1."""
        return _prev(self.frees, a, b)

    def prev_alloc(self, a: int, b: int) -> int:
        """Last allocation event in ``[a, b)``, or -1."""
        return _prev(self.allocs, a, b)

    def allocated_at(self) -> int | None:
        """Seq of the allocation when it is the first event other than a free (else the storage predates the trace)."""
        a = _next(self.allocs, 0, len(self.seqs))
        if a < 0:
            return None
        r = _next(self.accesses.pos, 0, a)
        return self.seqs[a] if r < 0 else None

    def writer_count(self) -> int:
        """Ops that write the storage without reading or allocating it in the same op."""
        if self._writers is None:
            kinds: dict[int, int] = {}
            for seq, kind in zip(self.seqs, self.kinds):
                kinds[seq] = kinds.get(seq, 0) | (1 << kind)
            self._writers = sum(1 for k in kinds.values() if k & (1 << WRITE) and not k & ((1 << READ) | (1 << ALLOC)))
        return self._writers
