"""The sources a copy reads, and whether each one is a value made for this copy alone (issue 11).

A ``cat`` reads several sources: every one of them must be judged, and the empty ones (the first
``DynamicLayer.update`` concatenates the new keys to an empty tensor) copy nothing. The verdict rules
and ``copyhunt verify`` (which re-runs the program with the producers writing the destination) use
these same answers, so what is judged is what is tested.
"""

from __future__ import annotations

from typing import NamedTuple

from copyhunt.analysis.index import Fate, History, Range, TraceIndex
from copyhunt.analysis.op_facts import CONCAT_OPS
from copyhunt.analysis.wording import lossless
from copyhunt.text import op_name
from copyhunt.records import CopyRecord


class Source(NamedTuple):
    """One tensor a copy reads: its storage, the bytes read, its 1-based position among the sources,
    its dtype, and whether it is contiguous (None: unknown)."""

    storage: int
    rng: Range
    position: int
    dtype: str
    contiguous: bool | None


class Fresh(NamedTuple):
    """A source value made for this copy alone: how it began (its producer) and how it ends."""

    source: Source
    history: History
    fate: Fate


def sources(copy: CopyRecord, ctx: TraceIndex) -> tuple[Source, ...] | None:
    """Every source the copy op read, in argument order; None when the trace cannot tell."""
    # Keyed by every field it reads: two records may share a seq (replays, a test's hand-made ones).
    key = ("sources", copy.seq, copy.op, copy.dtype, copy.src_storage, copy.src_dtype, copy.src_contiguous,
           copy.src_storages, copy.src_dtypes, copy.src_contiguity)
    return ctx.cached(key, lambda: _sources(copy, ctx))


def _sources(copy: CopyRecord, ctx: TraceIndex) -> tuple[Source, ...] | None:
    op = ctx.op(copy.seq)
    if op is None or copy.src_storage is None:
        return None
    if op_name(copy.op) in CONCAT_OPS:
        # A cat's reads are its tensors, one access each, in argument order (the capture records
        # them so); the storages must agree with the copy record's, or the trace cannot tell.
        listed = list(copy.src_storages) or [copy.src_storage]
        if [a.storage for a in op.reads] != listed:
            return None
        n = len(listed)
        dtypes = list(copy.src_dtypes) or [copy.src_dtype or copy.dtype] + [None] * (n - 1)
        contig = list(copy.src_contiguity) or [copy.src_contiguous] + [None] * (n - 1)
        if len(dtypes) != n or len(contig) != n:
            return None
        # A trace without per-source dtypes (an older capture) leaves the later ones unknown: the
        # copy's dtype stands in, and the rules that need the truth check ``contiguous`` (None).
        return tuple(Source(a.storage, Range(a.offset, a.offset + a.nbytes), i + 1, dtypes[i] or copy.dtype, contig[i])
                     for i, a in enumerate(op.reads))
    rng, _ = ctx.read_range(copy)
    if rng is None:
        return None
    return (Source(copy.src_storage, rng, 1, copy.src_dtype or copy.dtype, copy.src_contiguous),)


def live_sources(copy: CopyRecord, ctx: TraceIndex) -> tuple[Source, ...] | None:
    """The sources that hold at least one byte (``cat([empty, x])`` copies x alone)."""
    key = ("live", copy.seq, copy.op, copy.dtype, copy.src_storage, copy.src_dtype, copy.src_contiguous,
           copy.src_storages, copy.src_dtypes, copy.src_contiguity)
    return ctx.cached(key, lambda: _live(sources(copy, ctx)))


def _live(found: tuple[Source, ...] | None) -> tuple[Source, ...] | None:
    return None if found is None else tuple(s for s in found if s.rng.nbytes > 0)


def merge_exact(first: CopyRecord, second: CopyRecord) -> bool:
    """True when copying X -> I (first) then I -> D (second) equals one copy X -> D.

    Exact when the first cast loses nothing, or the second casts nothing; a narrowing cast
    followed by another cast rounds on purpose (``x.to(bf16).float()``).
    """
    return lossless(first.src_dtype or first.dtype, first.dtype) or first.dtype == second.dtype


def fresh_source(copy: CopyRecord, ctx: TraceIndex, src: Source) -> Fresh | None:
    """The source's value if it was just produced, is read by this copy alone, and then dies."""
    win = ctx.window(copy)
    h = ctx.history(src.storage, src.rng, copy.seq, win=win)
    if h.producer is None or h.start is None or h.shared or h.limited or not h.contained:
        return None
    fate = ctx.fate(src.storage, src.rng, copy.seq, win=win)
    if not fate.dies_unread:
        return None
    prod_op = ctx.op(h.producer)
    if prod_op is not None and prod_op.is_copy:
        prod_copy = ctx.copy_at(h.producer)
        if prod_copy is None or not merge_exact(prod_copy, copy):
            # e.g. x.to(bf16) copied back into fp32: the rounding is the point (and a copy record
            # left out by a --kind filter leaves its dtypes unknown).
            return None
    return Fresh(src, h, fate)


def made_by_reshape(copy: CopyRecord, ctx: TraceIndex) -> bool:
    """True for the clone inside ``reshape`` (``clone`` then ``_unsafe_view`` at the same line).

    reshape copies only when no view of its input has the new shape (``repeat_kv``'s expand then
    merge of heads), so no alias can replace such a copy.
    """
    if op_name(copy.op) != "clone":
        return False
    nxt, this = ctx.op(copy.seq + 1), ctx.op(copy.seq)
    return (nxt is not None and this is not None and op_name(nxt.op) == "_unsafe_view"
            and nxt.site == this.site and nxt.thread == this.thread)
