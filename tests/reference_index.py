"""REFERENCE for tests only: the verdict index as it was before issue 12, stepping over every event.

tests/test_index_equivalence.py checks that copyhunt.analysis.index answers every query exactly as
these plain walks do (they are the specification), on random traces, with and without the scan limit.

The original docstring follows.

A read-only index of a trace's per-op storage accesses, built once per trace for the verdict rules.

For every storage it keeps the ordered timeline of events (free, alloc, read, write with byte
ranges) so a rule can ask "what happens to these bytes after / before seq N" by a binary search
plus a short forward or backward walk (O(log n + k)), never a scan of the whole trace.

Order of events inside one op: free (the storage was found dead just before the op), alloc,
read, write. Reads come before writes so that an in-place read-modify-write op counts as a read
of the old value, which is what it is.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterator, Mapping, NamedTuple

from copyhunt.analysis.trust import OPEN, Window, captured_runs, inside, opaque_storages
from copyhunt.records import Access, CopyRecord, OpRecord, StorageInfo, Trace

__all__ = ["TraceIndex", "Range", "Event", "Fate", "History", "Window", "OPEN", "SCAN_LIMIT"]

FREE, ALLOC, READ, WRITE = 0, 1, 2, 3  # also the order of one op's events

#: A walk that would visit more events than this on one storage gives up and answers "unknown";
#: the rules then stay conservative (needed). It bounds judge() on huge traces whose shared
#: buffers (KV caches, workspaces) see thousands of disjoint slice accesses.
SCAN_LIMIT = 4096

_WHOLE = 1 << 62  # "every byte" for alloc/free events (storages are far smaller)


@dataclass(frozen=True)
class Range:
    """Half-open byte range ``[start, end)`` of one storage."""

    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Length in bytes."""
        return self.end - self.start

    def overlaps(self, start: int, end: int) -> bool:
        """True when ``[start, end)`` shares at least one byte with this range."""
        return start < self.end and self.start < end

    def within(self, start: int, end: int) -> bool:
        """True when this range lies inside ``[start, end)``."""
        return start <= self.start and self.end <= end


class Event(NamedTuple):
    """One access of one storage by one op (a tuple: the index holds many of them)."""

    seq: int
    kind: int  # FREE, ALLOC, READ or WRITE
    start: int
    end: int
    dense: bool


class Fate(NamedTuple):
    """What happens next to a byte range after a given op."""

    what: str  # "read" | "overwritten" | "freed" | "end" | "unknown"
    seq: int | None  # the op that decided it (None for "end" / "unknown")
    alive: bool  # for "end": the storage may still be read after the hunt

    @property
    def dies_unread(self) -> bool:
        """True when the trace proves the bytes are never read again."""
        return self.what in ("overwritten", "freed") or (self.what == "end" and not self.alive)


class History(NamedTuple):
    """How the value a copy reads was produced (a backward walk from the copy)."""

    producer: int | None  # last op that wrote the range before the copy
    start: int | None  # op that began the value: pure full overwrite or the allocation
    allocated: bool  # the value began in a buffer allocated for it (nobody read the buffer before)
    writers: tuple[int, ...]  # every op that wrote the range in [start, producer], newest first
    contained: bool  # every such write stayed inside the range
    covering: bool  # the producer's dense writes cover the whole range
    shared: bool  # some op other than its writers read the value between start and the copy
    limited: bool  # the walk hit SCAN_LIMIT or the start of the trace


def _bounding(accesses: tuple[Access, ...], storage: int) -> tuple[Range | None, bool]:
    """Bounding byte range of the accesses to ``storage`` and whether all of them are dense."""
    start, end, dense, seen = 0, 0, True, False
    for a in accesses:
        if a.storage != storage:
            continue
        if not seen:
            start, end, seen = a.offset, a.offset + a.nbytes, True
        else:
            start, end = min(start, a.offset), max(end, a.offset + a.nbytes)
        dense = dense and a.dense
    return (Range(start, end) if seen else None), dense


class TraceIndex:
    """Immutable per-storage timelines and per-seq lookups of one trace."""

    def __init__(self, trace: Trace) -> None:
        ops = sorted(trace.ops, key=lambda o: o.seq)  # stable: ties keep the recorded order
        timelines: dict[int, list[Event]] = {}
        by_seq: dict[int, OpRecord] = {}

        def add(storage: int, ev: Event) -> None:
            line = timelines.get(storage)
            if line is None:
                timelines[storage] = [ev]
            else:
                line.append(ev)

        for op in ops:
            seq = op.seq
            by_seq.setdefault(seq, op)
            # Appended in kind order (free < alloc < read < write): each timeline stays sorted.
            for sid in op.frees:
                add(sid, Event(seq, FREE, 0, _WHOLE, True))
            for sid in op.allocs:
                add(sid, Event(seq, ALLOC, 0, _WHOLE, True))
            for a in op.reads:
                add(a.storage, Event(seq, READ, a.offset, a.offset + a.nbytes, a.dense))
            for a in op.writes:
                add(a.storage, Event(seq, WRITE, a.offset, a.offset + a.nbytes, a.dense))
        self._timelines: Mapping[int, tuple[Event, ...]] = MappingProxyType({k: tuple(v) for k, v in timelines.items()})
        self._seqs: Mapping[int, tuple[int, ...]] = MappingProxyType(
            {k: tuple(e.seq for e in v) for k, v in self._timelines.items()}
        )
        self._ops: Mapping[int, OpRecord] = MappingProxyType(by_seq)
        self._writers: Mapping[int, int] = MappingProxyType({k: _overwriters(v) for k, v in self._timelines.items()})
        copies: dict[int, CopyRecord] = {}
        for c in trace.copies:
            if c.origin == "dispatch":
                copies.setdefault(c.seq, c)
        self._copies: Mapping[int, CopyRecord] = MappingProxyType(copies)
        self._storages: Mapping[int, StorageInfo] = MappingProxyType({s.id: s for s in trace.storages})
        self._foreign, self._graph = opaque_storages(trace, self._copies)
        self._segments: Mapping[int, tuple[int, int]] = MappingProxyType(captured_runs(ops))

    def cached(self, key, make):  # the new index remembers answers; the reference recomputes them
        return make()

    # --- lookups ----------------------------------------------------------------------------

    def op(self, seq: int) -> OpRecord | None:
        """The op record at ``seq``, if the trace has one."""
        return self._ops.get(seq)

    def copy_at(self, seq: int) -> CopyRecord | None:
        """The dispatch copy record made by the op at ``seq``, if any."""
        return self._copies.get(seq)

    def storage(self, storage: int) -> StorageInfo | None:
        """What the trace says about a storage (size, device, alive at the end)."""
        return self._storages.get(storage)

    def writer_count(self, storage: int) -> int:
        """How many ops (re)filled ``storage`` in the trace: wrote it without reading or allocating it.

        2 or more marks a reused buffer (a workspace); an accumulator updated in place counts 0.
        """
        return self._writers.get(storage, 0)

    def window(self, copy: CopyRecord) -> Window:
        """The events a walk about ``copy`` may trust (see :class:`Window`)."""
        if not copy.captured_in_graph:
            return OPEN
        lo, hi = self._segments.get(copy.seq, (copy.seq, copy.seq))
        return Window(lo, hi, True)

    def unseen_graph_access(self, copy: CopyRecord) -> bool:
        """True when a CUDA graph may touch the copy's source or destination without op records."""
        win = self.window(copy)
        return any(s is not None and self._blocked(s, win) for s in (copy.src_storage, copy.dst_storage))

    def _blocked(self, storage: int, win: Window) -> bool:
        # Unseen accesses possible: a replayed graph captured elsewhere may touch any device
        # storage; an eager copy cannot see what replays of graphs captured here do.
        return storage in self._foreign or (not win.captured and storage in self._graph)

    def alive_at_end(self, storage: int) -> bool:
        """True unless the trace says the storage was dead when the hunt ended (unknown = alive)."""
        info = self._storages.get(storage)
        return True if info is None else info.alive_at_end

    def read_range(self, copy: CopyRecord) -> tuple[Range | None, bool]:
        """Bytes of the source storage the copy op read (bounding range) and whether densely."""
        op = self._ops.get(copy.seq)
        if op is None or copy.src_storage is None:
            return None, False
        return _bounding(op.reads, copy.src_storage)

    def write_range(self, copy: CopyRecord) -> tuple[Range | None, bool]:
        """Bytes of the destination storage the copy op wrote (bounding range) and whether densely."""
        op = self._ops.get(copy.seq)
        if op is None or copy.dst_storage is None:
            return None, False
        return _bounding(op.writes, copy.dst_storage)

    def first_use(self, storage: int) -> int | None:
        """Seq of the first op that touched ``storage`` in the trace (read, wrote or allocated it), or None."""
        events = self._timelines.get(storage, ())
        return events[0].seq if events else None

    def allocated_by(self, storage: int) -> int | None:
        """Seq of the op that allocated ``storage`` inside the trace, or None."""
        for ev in self._timelines.get(storage, ()):
            if ev.kind == ALLOC:
                return ev.seq
            if ev.kind != FREE:
                return None  # used before any allocation: it predates the trace
        return None

    # --- walks ------------------------------------------------------------------------------

    def events(self, storage: int, after: int, before: int | None = None) -> Iterator[Event]:
        """Events on ``storage`` with ``after < seq < before`` in order (at most SCAN_LIMIT + 1)."""
        seqs = self._seqs.get(storage)
        if not seqs:
            return
        timeline = self._timelines[storage]
        i = bisect_right(seqs, after)
        stop = len(seqs) if before is None else bisect_left(seqs, before)
        # Index by index: a slice would copy up to SCAN_LIMIT events per call even when the
        # caller stops at the first one.
        for k in range(i, min(stop, i + SCAN_LIMIT + 1)):
            yield timeline[k]

    def fate(self, storage: int, rng: Range, after: int, win: Window = OPEN) -> Fate:
        """What happens first to ``rng`` after op ``after``: read, fully overwritten, freed or nothing.

        A later write only overwrites when dense; several dense writes may cover the range
        piecewise. A read of any byte not yet overwritten counts as a read.
        """
        if self._blocked(storage, win):
            return Fate("unknown", None, True)
        live = [(rng.start, rng.end)]
        n = 0
        for ev in self.events(storage, after):
            n += 1
            if n > SCAN_LIMIT or (win.hi is not None and ev.seq > win.hi):
                return Fate("unknown", None, True)
            if ev.kind == FREE:
                # Trusted inside a capture too: once its tensors are gone no op, replayed or
                # eager, can reach the storage again (its memory stays in the graph's pool).

                return Fate("freed", ev.seq, False)
            if ev.kind == READ:
                if any(ev.start < e and s < ev.end for s, e in live):
                    return Fate("read", ev.seq, True)
            elif ev.kind == WRITE and ev.dense:
                live = _subtract(live, ev.start, ev.end)
                if not live:
                    return Fate("overwritten", ev.seq, True)
        if win.captured:
            return Fate("unknown", None, True)
        return Fate("end", None, self.alive_at_end(storage))

    def first_write(self, storage: int, rng: Range, after: int, before: int | None, win: Window = OPEN) -> int | None | bool:
        """Seq of the first write overlapping ``rng`` in ``(after, before)``; None if none; False if unknown."""
        if self._blocked(storage, win) or not inside(win, after, before):
            return False
        n = 0
        for ev in self.events(storage, after, before):
            n += 1
            if n > SCAN_LIMIT:
                return False
            if ev.kind == WRITE and rng.overlaps(ev.start, ev.end):
                return ev.seq
        return None

    def touched(self, storage: int, rng: Range, after: int, before: int, ignore: int | None = None,
                win: Window = OPEN) -> bool:
        """True when some op other than ``ignore`` reads or writes ``rng`` in ``(after, before)`` (or unknown)."""
        if self._blocked(storage, win) or not inside(win, after, before):
            return True
        n = 0
        for ev in self.events(storage, after, before):
            n += 1
            if n > SCAN_LIMIT:
                return True
            if ev.kind in (READ, WRITE) and ev.seq != ignore and rng.overlaps(ev.start, ev.end):
                return True
        return False

    def death(self, storage: int, after: int, win: Window = OPEN) -> tuple[int | None, bool]:
        """(seq of the op before which ``storage`` was found dead, alive at end); (None, True) if unknown."""
        if self._blocked(storage, win):
            return None, True
        n = 0
        for ev in self.events(storage, after):
            n += 1
            if n > SCAN_LIMIT or (win.hi is not None and ev.seq > win.hi):
                return None, True
            if ev.kind == FREE:
                return ev.seq, False
        if win.captured:
            return None, True  # still alive when the capture ended: replays and eager code may use it
        return None, self.alive_at_end(storage)

    def history(self, storage: int, rng: Range, before: int, win: Window = OPEN) -> History:
        """Walk back from op ``before`` to find who produced the value in ``rng`` and who else read it."""
        if self._blocked(storage, win):
            return History(None, None, False, (), False, False, True, True)
        seqs = self._seqs.get(storage, ())
        timeline = self._timelines.get(storage, ())
        i = bisect_left(seqs, before) - 1
        lowest = max(-1, i - SCAN_LIMIT)
        if win.lo is not None:
            # Only the graph's own ops: a value made before the capture is made anew (unseen) by
            # the eager code between replays. Stopping early reports the walk as limited.
            lowest = max(lowest, bisect_left(seqs, win.lo) - 1)
        producer: int | None = None
        writers: list[int] = []
        contained, covering, shared = True, False, False
        while i > lowest:
            # Gather the events of one op (they sit next to each other in the timeline).
            seq = timeline[i].seq
            j = i
            while j > lowest and timeline[j].seq == seq:
                j -= 1
            group = timeline[j + 1 : i + 1]
            i = j
            reads = any(e.kind == READ and rng.overlaps(e.start, e.end) for e in group)
            writes = [e for e in group if e.kind == WRITE and rng.overlaps(e.start, e.end)]
            alloc = any(e.kind == ALLOC for e in group)
            if any(e.kind == FREE for e in group):
                break  # cannot happen for a storage read later; give up conservatively
            if writes:
                if producer is None:
                    producer = seq
                    covering = _covers(writes, rng)
                writers.append(seq)
                contained = contained and all(Range(e.start, e.end).within(rng.start, rng.end) for e in writes)
                full = _covers(writes, rng)
                if alloc or (full and not reads):
                    # A full overwrite of a buffer nobody read since its allocation (``torch.empty``
                    # then ``sum(out=)``) still makes a fresh buffer for this value.
                    fresh = alloc or _unread_since_alloc(timeline, i, lowest, rng)
                    return History(producer, seq, fresh, tuple(writers), contained, covering, shared, False)
            elif reads:
                shared = True  # someone besides the copy reads this value (before or after its last write)
            elif alloc:
                # Allocated without writing the range: the value starts here (uninitialised memory).
                if producer is None:
                    return History(None, seq, True, (), True, False, False, False)
                return History(producer, seq, True, tuple(writers), contained, covering, shared, False)
        return History(producer, None, False, tuple(writers), contained, covering, shared, True)


def _overwriters(timeline: tuple[Event, ...]) -> int:
    """Ops that write a storage without reading or allocating it in the same op."""
    kinds: dict[int, set[int]] = {}
    for ev in timeline:
        kinds.setdefault(ev.seq, set()).add(ev.kind)
    return sum(1 for k in kinds.values() if WRITE in k and READ not in k and ALLOC not in k)


def _unread_since_alloc(timeline: tuple[Event, ...], i: int, lowest: int, rng: Range) -> bool:
    """True when walking back from ``timeline[i]`` reaches the storage's allocation before any read of ``rng``."""
    while i > lowest:
        ev = timeline[i]
        if ev.kind == ALLOC:
            return True
        if ev.kind in (READ, FREE) and rng.overlaps(ev.start, ev.end):
            return False
        i -= 1
    return False


def _subtract(live: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Remove ``[start, end)`` from a list of disjoint intervals."""
    out: list[tuple[int, int]] = []
    for s, e in live:
        if end <= s or e <= start:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if end < e:
            out.append((end, e))
    return out


def _covers(writes: list[Event], rng: Range) -> bool:
    """True when the dense writes together cover every byte of ``rng``."""
    live = [(rng.start, rng.end)]
    for w in writes:
        if w.dense:
            live = _subtract(live, w.start, w.end)
    return not live
