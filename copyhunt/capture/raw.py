"""Raw capture rows: their field lists, the writer the hot path calls, and the reader that builds records.

The dispatch capture runs once per aten op of the traced program, so what it keeps per op is the
cheapest form that still holds every fact: flat tuples of ints and strings (:data:`OP_FIELDS`,
:data:`COPY_FIELDS`), with code objects interned into ``sites`` (one frame) and ``stacks`` (a site and
its callers). Nothing here refers to a tensor or a storage object: storages are small integer ids
(``capture/storages.py``). :meth:`RawLog.read` turns the rows into ``copyhunt.records`` objects once,
after the hunt, releasing each raw row as its record is built (the peak holds one form, not both).

Writer and reader share the field lists below: ``RawLog.op`` / ``RawLog.copy`` take their fields in
that order, and :meth:`RawLog.read` unpacks them in that order (tests/test_capture_raw.py checks both).
"""

from __future__ import annotations

import collections
import sys
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Container, Sequence

from copyhunt.capture.sites import SiteChooser
from copyhunt.gc_pause import no_cyclic_gc
from copyhunt.records import Access, CopyRecord, Frame, OpRecord, StorageInfo
from copyhunt.validation import source_line

#: Fields of one op row (``RawLog.op``). ``reads`` / ``writes``: flat tuples, ``storage, offset, nbytes,
#: dense`` for each access one after another (one tuple per op: ~100 B less per op than a tuple per access); ``allocs`` / ``frees``: storage ids; ``site``: index into ``RawLog.sites`` or None.
OP_FIELDS = ("seq", "op", "reads", "writes", "allocs", "frees", "site", "module", "region", "thread", "is_copy", "in_graph")

#: Fields of one copy row (``RawLog.copy``). ``stack``: index into ``RawLog.stacks``; ``layouts``: per source
#: (dtype, contiguous) when the copy has several sources (cat), else None.
COPY_FIELDS = (
    "seq", "op", "kind", "nbytes", "noop", "src_device", "dst_device", "shape", "dtype", "src_dtype",
    "src_contiguous", "dst_contiguous", "stack", "module", "region", "thread", "in_graph", "src_storage",
    "dst_storage", "src_storages", "exact", "layouts",
)  # fmt: skip

Attribute = Callable[[Sequence[Frame]], "tuple[Frame | None, tuple[Frame, ...]]"]

_LASTI = sys.version_info >= (3, 11)

#: Distinct accesses remembered while reading, to share equal Access objects (see RawLog._read).
_RECENT_ACCESSES = 4096


if _LASTI:

    def where(f: Any) -> int:
        """Raw position of a live frame: ``-1 - bytecode offset`` (3.11+: ``f_lineno`` decodes the line table, ~1 us)."""
        return -1 - f.f_lasti

else:  # pragma: no cover - 3.10

    def where(f: Any) -> int:
        """Raw position of a live frame: its line number."""
        return f.f_lineno


def line_of(code: Any, pos: int) -> int:
    """Source line of a raw frame position: a line number (>= 0) or ``-1 - bytecode offset``."""
    if pos >= 0:
        return pos
    offset = -1 - pos
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line if line is not None else code.co_firstlineno
    return code.co_firstlineno


@dataclass
class CaptureResult:
    """Records built from one capture."""

    copies: list[CopyRecord]
    ops: list[OpRecord]
    storages: list[StorageInfo]
    notes: list[str]


class RawLog:
    """The rows of one capture and the interned code positions they point to."""

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []
        self.copies: list[tuple[Any, ...]] = []
        self.sites: list[tuple[Any, int]] = []  # (code, raw position)
        self.stacks: list[tuple[tuple[Any, int], ...]] = []
        self._site_ids: dict[tuple[int, int], int] = {}
        self._stack_ids: dict[tuple[int, ...], int] = {}
        self._append_op = self.ops.append

    def keep_newest_ops(self, n: int) -> None:
        """Ring mode (``hunt(max_ops=n)``): from now on keep only the newest ``n`` op rows (copies all kept)."""
        self.ops = collections.deque(self.ops, maxlen=n)  # type: ignore[assignment]
        self._append_op = self.ops.append

    # --- writer (the hot path) ---------------------------------------------------------------

    def op(
        self,
        seq: int,
        op: str,
        reads: tuple[Any, ...],
        writes: tuple[Any, ...],
        allocs: tuple[int, ...],
        frees: tuple[int, ...],
        site: int | None,
        module: str | None,
        region: str | None,
        thread: int,
        is_copy: bool,
        in_graph: bool,
    ) -> None:
        """Append one op row (fields: :data:`OP_FIELDS`)."""
        self._append_op((seq, op, reads, writes, allocs, frees, site, module, region, thread, is_copy, in_graph))

    def copy(
        self,
        seq: int,
        op: str,
        kind: str,
        nbytes: int,
        noop: bool,
        src_device: str,
        dst_device: str,
        shape: tuple[int, ...],
        dtype: str,
        src_dtype: str | None,
        src_contiguous: bool | None,
        dst_contiguous: bool,
        stack: int,
        module: str | None,
        region: str | None,
        thread: int,
        in_graph: bool,
        src_storage: int | None,
        dst_storage: int | None,
        src_storages: tuple[int, ...],
        exact: bool,
        layouts: tuple[tuple[str, bool | None], ...] | None,
    ) -> None:
        """Append one copy row (fields: :data:`COPY_FIELDS`)."""
        self.copies.append(
            (seq, op, kind, nbytes, noop, src_device, dst_device, shape, dtype, src_dtype, src_contiguous,
             dst_contiguous, stack, module, region, thread, in_graph, src_storage, dst_storage, src_storages,
             exact, layouts)
        )  # fmt: skip

    def site(self, f: Any) -> int:
        """Index of a live frame's position in ``sites`` (interned)."""
        key = (id(f.f_code), where(f))
        i = self._site_ids.get(key)
        if i is None:
            i = self._site_ids[key] = len(self.sites)
            self.sites.append((f.f_code, key[1]))  # keeps the code object: its id stays unique
        return i

    def stack(self, site: Any, depth: int) -> int:
        """Index of an interned raw stack: the site frame and up to ``depth - 1`` callers."""
        key: list[int] = []
        f = site
        lasti = _LASTI
        while f is not None and len(key) < 2 * depth:
            key.append(id(f.f_code))
            key.append(-1 - f.f_lasti if lasti else f.f_lineno)  # where(f), inlined
            f = f.f_back
        k = tuple(key)
        i = self._stack_ids.get(k)
        if i is None:
            # New stack: keep its code objects (they keep the ids in ``k`` unique meanwhile).
            out: list[tuple[Any, int]] = []
            f = site
            while f is not None and len(out) < depth:
                out.append((f.f_code, where(f)))
                f = f.f_back
            i = self._stack_ids[k] = len(self.stacks)
            self.stacks.append(tuple(out))
        return i

    # --- reader (once, after the hunt) -------------------------------------------------------

    def read(
        self,
        *,
        devices: Sequence[str],
        nbytes: Sequence[int],
        alive: Container[int],
        attribute: Attribute,
        notes: list[str],
        relocate: Callable[[Frame], Frame] | None = None,
        native: Any = None,
    ) -> CaptureResult:
        """Records from the rows; the rows are released as they are read (the log is empty afterwards).

        ``relocate`` rewrites each distinct frame once, after attribution chose the sites on the real
        paths (``copyhunt.attribution.frame_relocator``: paths relative to the project root).
        ``native``: the compiled recorder module (``capture/native_recorder.py``), which builds the op
        and storage records in C; None builds them here.
        """
        # Building creates a few objects per op, all kept, none cyclic. Paused for this call only.
        with no_cyclic_gc():
            return self._read(devices, nbytes, alive, attribute, notes, relocate, native)

    def _read(
        self,
        devices: Sequence[str],
        nbytes: Sequence[int],
        alive: Container[int],
        attribute: Attribute,
        notes: list[str],
        relocate: Callable[[Frame], Frame] | None = None,
        native: Any = None,
    ) -> CaptureResult:
        frames: dict[tuple[int, int], Frame] = {}

        def frame_of(raw: tuple[Any, int]) -> Frame:
            code, pos = raw
            key = (id(code), pos)
            fr = frames.get(key)
            if fr is None:
                fr = frames[key] = Frame(code.co_filename, line_of(code, pos), code.co_name)
            return fr

        site_frames = [frame_of(s) for s in self.sites]
        attributed = [attribute(tuple(frame_of(r) for r in st)) for st in self.stacks]
        # Each copy site's source text, read now (the files are the ones the program ran) and stored in
        # the trace, so no reader ever opens a file a trace names (issue 18). Once per distinct site.
        with_text: dict[Frame, Frame] = {}

        def texted(fr: Frame | None) -> Frame | None:
            if fr is None:
                return None
            out = with_text.get(fr)
            if out is None:
                out = with_text[fr] = dataclasses.replace(fr, source_text=source_line(fr.file, fr.line))
            return out

        attributed = [(texted(site), stack) for site, stack in attributed]
        if relocate is not None:  # after the source text was read from the real path
            site_frames = [relocate(f) for f in site_frames]
            attributed = [(None if s is None else relocate(s), tuple(relocate(f) for f in st)) for s, st in attributed]

        copies = self.copies
        copies.sort(key=_seq_of)
        copy_records: list[CopyRecord] = []
        for i, c in enumerate(copies):
            (seq, op, kind, nb, noop, src_dev, dst_dev, shape, dtype, src_dtype, src_contig, dst_contig,
             stack_i, module, region, tid, in_graph, src_sid, dst_sid, src_sids, exact, layouts) = c  # fmt: skip
            copies[i] = None  # type: ignore[call-overload]  # release the row as its record is built
            site, stack = attributed[stack_i]
            copy_records.append(
                CopyRecord(
                    seq=seq,
                    op=op,
                    kind=kind,
                    bytes=nb,
                    noop=noop,
                    src_device=src_dev,
                    dst_device=dst_dev,
                    shape=shape,
                    dtype=dtype,
                    site=site,
                    module=module,
                    region=region,
                    captured_in_graph=in_graph,
                    src_dtype=src_dtype,
                    src_contiguous=src_contig,
                    dst_contiguous=dst_contig,
                    stack=stack,
                    thread=tid,
                    src_storage=src_sid,
                    dst_storage=dst_sid,
                    src_storages=src_sids if len(src_sids) > 1 else (),
                    src_dtypes=tuple(d for d, _ in layouts) if layouts is not None else (),
                    src_contiguity=tuple(c for _, c in layouts) if layouts is not None else (),
                    bytes_exact=exact,
                )
            )
        copies.clear()

        # Equal accesses share one object (an op reading what the op before it wrote; a weight read
        # every step) through a table of the recent ones: cleared when full, so it costs a bounded
        # amount, not a key and an entry per distinct access of a long hunt.
        recent: dict[tuple[Any, ...], Access] = {}

        def acc(flat: tuple[Any, ...]) -> tuple[Access, ...]:
            out = []
            for i in range(0, len(flat), 4):
                raw = flat[i : i + 4] if len(flat) != 4 else flat
                a = recent.get(raw)
                if a is None:
                    if len(recent) >= _RECENT_ACCESSES:
                        recent.clear()
                    a = recent[raw] = Access(*raw)
                out.append(a)
            return tuple(out)

        if not isinstance(self.ops, list):  # ring mode's deque
            self.ops = list(self.ops)
        ops = self.ops
        ops.sort(key=_seq_of)  # rows of several threads interleave; one thread's are in order already
        op_records: list[OpRecord] = []
        if native is not None:
            # The loop below in C (native_recorder.cpp build_ops): the same records, ~10x faster.
            try:
                op_records = native.build_ops(ops, site_frames, OpRecord, Access, _RECENT_ACCESSES)
            except (ValueError, TypeError):
                op_records = []  # rows it does not recognise (none are expected): the loop below reads them
        for i, o in enumerate(ops):
            seq, op, reads, writes, allocs, frees, site_i, module, region, tid, is_copy, in_graph = o
            ops[i] = None  # type: ignore[call-overload]  # release the row as its record is built
            op_records.append(
                OpRecord(
                    seq=seq,
                    op=op,
                    reads=acc(reads) if reads else (),
                    writes=acc(writes) if writes else (),
                    allocs=allocs,
                    frees=frees,
                    site=None if site_i is None else site_frames[site_i],
                    module=module,
                    region=region,
                    thread=tid,
                    is_copy=is_copy,
                    captured_in_graph=in_graph,
                )
            )
        ops.clear()
        if native is not None and type(devices) is list and type(nbytes) is list:
            storages = native.build_storages(devices, nbytes, alive, StorageInfo)
        else:
            storages = [StorageInfo(id=i, device=d, nbytes=n, alive_at_end=i in alive) for i, (d, n) in enumerate(zip(devices, nbytes))]
        return CaptureResult(copy_records, op_records, storages, notes)


def _seq_of(row: tuple[Any, ...]) -> int:
    return row[0]  # type: ignore[no-any-return]


def rank_attribute(chooser: SiteChooser, depth: int) -> Attribute:
    """(site, short stack) by the chooser's rule alone (when no attribution function is injected)."""

    def attribute(stack: Sequence[Frame]) -> tuple[Frame | None, tuple[Frame, ...]]:
        i = chooser.index([fr.file for fr in stack])
        if i is None:
            return None, tuple(stack[:depth])
        return stack[i], tuple(stack[i : i + depth])

    return attribute
