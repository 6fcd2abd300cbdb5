"""A read-only index of a trace's per-op storage accesses, built once per trace for the verdict rules.

For every storage it keeps the ordered timeline of events (free, alloc, read, write with byte
ranges; :mod:`copyhunt.analysis.timeline`) so a rule can ask "what happens to these bytes after /
before seq N". Every query jumps from one decisive event to the next with binary searches and a
segment tree (O(log n) each), never a scan over the earlier accesses of a storage; the one walk
that steps op by op is over the writers of a value (an accumulator updated in place), bounded by
``SCAN_LIMIT``.

Order of events inside one op: free (the storage was found dead just before the op), alloc,
read, write. Reads come before writes so that an in-place read-modify-write op counts as a read
of the old value, which is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple, TypeVar

from copyhunt.analysis.timeline import ALLOC, FREE, READ, WHOLE, WRITE, RawEvent, Timeline
from copyhunt.analysis.trust import OPEN, Window, captured_runs, inside, opaque_storages
from copyhunt.records import Access, CopyRecord, OpRecord, StorageInfo, Trace

__all__ = ["TraceIndex", "Range", "Fate", "History", "Window", "OPEN", "SCAN_LIMIT"]

#: How far a proof may reach: a query whose answer lies more than this many events of one storage
#: away (or past the end of a longer timeline) answers "unknown", and the rules stay conservative
#: (needed). The queries no longer step over those events, so this costs nothing; it stays so that
#: a verdict never depends on how the index is built.
SCAN_LIMIT = 4096

_MEMO = 512  # answers remembered at most (a few copies' worth)
T = TypeVar("T")


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


_UNKNOWN = Fate("unknown", None, True)
_BLOCKED = History(None, None, False, (), False, False, True, True)


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
        ops = list(trace.ops)
        if any(ops[k].seq > ops[k + 1].seq for k in range(len(ops) - 1)):
            ops.sort(key=lambda o: o.seq)  # stable: ties keep the recorded order
        raw: dict[int, list[RawEvent]] = {}
        by_seq: dict[int, OpRecord] = {}
        for op in ops:
            seq = op.seq
            if seq not in by_seq:
                by_seq[seq] = op
            # Appended in kind order (free < alloc < read < write): each timeline stays sorted.
            for sid in op.frees:
                raw.setdefault(sid, []).append((seq, FREE, 0, WHOLE, True))
            for sid in op.allocs:
                raw.setdefault(sid, []).append((seq, ALLOC, 0, WHOLE, True))
            for a in op.reads:
                raw.setdefault(a.storage, []).append((seq, READ, a.offset, a.offset + a.nbytes, a.dense))
            for a in op.writes:
                raw.setdefault(a.storage, []).append((seq, WRITE, a.offset, a.offset + a.nbytes, a.dense))
        self._raw = raw
        self._lines: dict[int, Timeline] = {}  # built on first use: most storages are never asked about
        self._work = [0]
        self._memo: dict[tuple, object] = {}  # answers for the copy being judged: its rules ask the same things
        self._ops: Mapping[int, OpRecord] = MappingProxyType(by_seq)
        copies: dict[int, CopyRecord] = {}
        for c in trace.copies:
            if c.origin == "dispatch":
                copies.setdefault(c.seq, c)
        self._copies: Mapping[int, CopyRecord] = MappingProxyType(copies)
        self._storages: Mapping[int, StorageInfo] = MappingProxyType({s.id: s for s in trace.storages})
        self._foreign, self._graph = opaque_storages(trace, self._copies)
        self._segments: Mapping[int, tuple[int, int]] = MappingProxyType(captured_runs(ops))

    def _line(self, storage: int) -> Timeline | None:
        line = self._lines.get(storage)
        if line is None:
            events = self._raw.get(storage)
            if events is None:
                return None
            line = self._lines[storage] = Timeline(events)
        return line

    def cached(self, key: tuple, make: Callable[[], T]) -> T:
        """``make()``, remembered under ``key`` for the next few copies (the rules of one copy ask the
        same questions: its sources, their history). Bounded: the memory of a judge stays flat."""
        memo = self._memo
        if key in memo:
            return memo[key]  # type: ignore[return-value]
        if len(memo) >= _MEMO:
            memo.clear()
        value = memo[key] = make()
        return value

    @property
    def work(self) -> int:
        """Events and tree nodes the queries examined so far: the index's cost, for scaling tests."""
        return self._work[0]

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
        line = self._line(storage)
        return 0 if line is None else line.writer_count()

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
        src = copy.src_storage
        return self.cached(("read", copy.seq, src), lambda: _bounding(op.reads, src))

    def write_range(self, copy: CopyRecord) -> tuple[Range | None, bool]:
        """Bytes of the destination storage the copy op wrote (bounding range) and whether densely."""
        op = self._ops.get(copy.seq)
        if op is None or copy.dst_storage is None:
            return None, False
        dst = copy.dst_storage
        return self.cached(("write", copy.seq, dst), lambda: _bounding(op.writes, dst))

    def first_use(self, storage: int) -> int | None:
        """Seq of the first op that touched ``storage`` in the trace (read, wrote or allocated it), or None."""
        events = self._raw.get(storage)
        return events[0][0] if events else None

    def allocated_by(self, storage: int) -> int | None:
        """Seq of the op that allocated ``storage`` inside the trace, or None."""
        line = self._line(storage)
        return None if line is None else line.allocated_at()

    # --- queries ------------------------------------------------------------------------------
    # Each one answers what a walk over the storage's events from the given op would answer,
    # stopping at the first decisive event, at SCAN_LIMIT events, or at the end of the window,
    # but finds the decisive event by lookups instead of stepping.

    def fate(self, storage: int, rng: Range, after: int, win: Window = OPEN) -> Fate:
        """What happens first to ``rng`` after op ``after``: read, fully overwritten, freed or nothing.

        A later write only overwrites when dense; several dense writes may cover the range
        piecewise. A read of any byte not yet overwritten counts as a read.
        """
        return self.cached(("fate", storage, rng.start, rng.end, after, win), lambda: self._fate(storage, rng, after, win))

    def _fate(self, storage: int, rng: Range, after: int, win: Window) -> Fate:
        if self._blocked(storage, win):
            return _UNKNOWN
        line = self._line(storage)
        n = 0 if line is None else len(line)
        if line is not None:
            i = line.after(after)
            cut = i + SCAN_LIMIT  # the first position a walk may not reach
            if win.hi is not None:
                cut = min(cut, line.after(win.hi))
            stop = min(n, cut)
            live = [(rng.start, rng.end)]
            work = self._work
            pos = i
            while True:
                k = line.next_free(pos, stop)
                if k >= 0:
                    stop = k  # anything decisive must come before the free
                for s, e in live:
                    for cls in (line.reads, line.dense_writes):
                        p = cls.first(pos, stop, s, e, work)
                        if p >= 0:
                            k, stop = p, p
                if k < 0:
                    break
                kind = line.kinds[k]
                if kind == FREE:
                    # Trusted inside a capture too: once its tensors are gone no op, replayed or
                    # eager, can reach the storage again (its memory stays in the graph's pool).
                    return Fate("freed", line.seqs[k], False)
                if kind == READ:
                    return Fate("read", line.seqs[k], True)
                live = _subtract(live, line.starts[k], line.ends[k])  # a dense write over live bytes
                if not live:
                    return Fate("overwritten", line.seqs[k], True)
                pos, stop = k + 1, min(n, cut)
            if n > cut:
                return _UNKNOWN  # the walk would have reached the limit or left the window first
        if win.captured:
            return _UNKNOWN
        return Fate("end", None, self.alive_at_end(storage))

    def first_write(self, storage: int, rng: Range, after: int, before: int | None, win: Window = OPEN) -> int | None | bool:
        """Seq of the first write overlapping ``rng`` in ``(after, before)``; None if none; False if unknown."""
        if self._blocked(storage, win) or not inside(win, after, before):
            return False
        line = self._line(storage)
        if line is None:
            return None
        i = line.after(after)
        stop = len(line) if before is None else line.before(before)
        cut = i + SCAN_LIMIT
        k = line.writes.first(i, min(stop, cut), rng.start, rng.end, self._work)
        if k >= 0:
            return line.seqs[k]
        return False if stop > cut else None

    def touched(self, storage: int, rng: Range, after: int, before: int, ignore: int | None = None,
                win: Window = OPEN) -> bool:
        """True when some op other than ``ignore`` reads or writes ``rng`` in ``(after, before)`` (or unknown)."""
        if self._blocked(storage, win) or not inside(win, after, before):
            return True
        line = self._line(storage)
        if line is None:
            return False
        i = line.after(after)
        stop = line.before(before)
        cut = i + SCAN_LIMIT
        k = line.accesses.first(i, min(stop, cut), rng.start, rng.end, self._work)
        if k >= 0 and line.seqs[k] == ignore:
            k = line.accesses.first(line.after(ignore), min(stop, cut), rng.start, rng.end, self._work)
        return k >= 0 or stop > cut

    def death(self, storage: int, after: int, win: Window = OPEN) -> tuple[int | None, bool]:
        """(seq of the op before which ``storage`` was found dead, alive at end); (None, True) if unknown."""
        return self.cached(("death", storage, after, win), lambda: self._death(storage, after, win))

    def _death(self, storage: int, after: int, win: Window) -> tuple[int | None, bool]:
        if self._blocked(storage, win):
            return None, True
        line = self._line(storage)
        if line is not None:
            n = len(line)
            i = line.after(after)
            cut = i + SCAN_LIMIT
            if win.hi is not None:
                cut = min(cut, line.after(win.hi))
            k = line.next_free(i, min(n, cut))
            if k >= 0:
                return line.seqs[k], False
            if n > cut:
                return None, True
        if win.captured:
            return None, True  # still alive when the capture ended: replays and eager code may use it
        return None, self.alive_at_end(storage)

    def history(self, storage: int, rng: Range, before: int, win: Window = OPEN) -> History:
        """Walk back from op ``before`` to find who produced the value in ``rng`` and who else read it."""
        return self.cached(("history", storage, rng.start, rng.end, before, win), lambda: self._history(storage, rng, before, win))

    def _history(self, storage: int, rng: Range, before: int, win: Window) -> History:
        if self._blocked(storage, win):
            return _BLOCKED
        line = self._line(storage)
        producer: int | None = None
        writers: list[int] = []
        contained, covering, shared = True, False, False
        if line is None:
            return History(producer, None, False, (), contained, covering, shared, True)
        s, e = rng.start, rng.end
        work = self._work
        i = line.before(before) - 1  # the walk goes down from here ...
        lowest = max(-1, i - SCAN_LIMIT)  # ... to just above here
        if win.lo is not None:
            # Only the graph's own ops: a value made before the capture is made anew (unseen) by
            # the eager code between replays. Stopping early reports the walk as limited.
            lowest = max(lowest, line.before(win.lo) - 1)
        kinds, starts, ends, dense = line.kinds, line.starts, line.ends, line.dense
        while i > lowest:
            # Jump to the last op that can change the answer: one that frees or allocates the
            # storage, writes the range, or (until someone did) reads it. Ops in between read
            # other bytes or read again what is known to be shared.
            a, b = lowest + 1, i + 1
            p = max(line.prev_free(a, b), line.prev_alloc(a, b), line.writes.last(a, b, s, e, work))
            if not shared:
                p = max(p, line.reads.last(a, b, s, e, work))
            if p < 0:
                break
            first, last = line.group(p)
            first = max(first, lowest + 1)  # a walk cut short by the limit sees part of an op
            work[0] += last - first + 1
            reads = alloc = freed = False
            writes: list[int] = []
            for q in range(first, last + 1):
                kind = kinds[q]
                if kind == FREE:
                    freed = True
                elif kind == ALLOC:
                    alloc = True
                elif starts[q] < e and s < ends[q]:
                    if kind == READ:
                        reads = True
                    else:
                        writes.append(q)
            i = first - 1
            seq = line.seqs[p]
            if freed:
                break  # cannot happen for a storage read later; give up conservatively
            if writes:
                full = _covers([(starts[q], ends[q]) for q in writes if dense[q]], rng)
                if producer is None:
                    producer, covering = seq, full
                writers.append(seq)
                contained = contained and all(s <= starts[q] and ends[q] <= e for q in writes)
                if alloc or (full and not reads):
                    # A full overwrite of a buffer nobody read since its allocation (``torch.empty``
                    # then ``sum(out=)``) still makes a fresh buffer for this value.
                    fresh = alloc or self._unread_since_alloc(line, i, lowest, rng)
                    return History(producer, seq, fresh, tuple(writers), contained, covering, shared, False)
            elif reads:
                shared = True  # someone besides the copy reads this value (before or after its last write)
            elif alloc:
                # Allocated without writing the range: the value starts here (uninitialised memory).
                if producer is None:
                    return History(None, seq, True, (), True, False, False, False)
                return History(producer, seq, True, tuple(writers), contained, covering, shared, False)
        return History(producer, None, False, tuple(writers), contained, covering, shared, True)

    def _unread_since_alloc(self, line: Timeline, i: int, lowest: int, rng: Range) -> bool:
        """True when walking back from position ``i`` reaches the storage's allocation before any read of ``rng``."""
        a, b = lowest + 1, i + 1
        p = max(line.prev_alloc(a, b), line.reads.last(a, b, rng.start, rng.end, self._work))
        if rng.overlaps(0, WHOLE):  # a free covers every byte (of a non-empty range)
            p = max(p, line.prev_free(a, b))
        return p >= 0 and line.kinds[p] == ALLOC


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


def _covers(writes: list[tuple[int, int]], rng: Range) -> bool:
    """True when the (dense) writes together cover every byte of ``rng``."""
    live = [(rng.start, rng.end)]
    for start, end in writes:
        live = _subtract(live, start, end)
    return not live
