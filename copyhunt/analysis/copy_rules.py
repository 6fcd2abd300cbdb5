"""The built-in verdict rules (one small pure function per verdict; see ``docs/verdicts.md``).

Every rule reads only the copy record and the trace index, proves its case from recorded reads,
writes, allocations and frees, and otherwise returns None. When the trace cannot prove a case
(a storage still alive when the hunt ended and never read inside it, a walk that hit the scan
limit, a missing op record) the rule stays silent: an unproven copy is "needed".
"""

from __future__ import annotations

from copyhunt.analysis.index import Fate, Range, TraceIndex
from copyhunt.analysis.op_facts import (
    ALIASABLE_OPS, ALLOC_ONLY_OPS, CONCAT_OPS, NOT_DESTINATION_PASSABLE, POINTWISE_OPS, short_dtype, write_obstacle,
)
from copyhunt.analysis.trust import Window
from copyhunt.analysis.rules import rule
from copyhunt.analysis.sources import Fresh, Source, fresh_source, live_sources, made_by_reshape, merge_exact, sources
from copyhunt.analysis.wording import ITEMSIZE, before, buffer, buffer_name, lossless, op_at
from copyhunt.records import CopyRecord, Finding
from copyhunt.text import human_bytes, op_name

#: The suggestion of a copy that must stay although part of it looked avoidable.
KEEP_REST = "keep it: whatever writes the first slices, the rest is still a copy"
#: Why a source is not a fresh temporary, in a partial cat's reason.
NOT_FRESH = "not a temporary made for this copy"


def _storages(copy: CopyRecord, ctx: TraceIndex) -> tuple[int, int] | None:
    """(source, destination) storages of a real (not noop) copy between two different known
    storages whose op record the trace holds; None otherwise."""
    src, dst = copy.src_storage, copy.dst_storage
    if copy.noop or src is None or dst is None or src == dst or ctx.op(copy.seq) is None:
        return None
    return src, dst


def _single_source(copy: CopyRecord, ctx: TraceIndex) -> Source | None:
    """The one source a copy reads bytes from (``cat([empty, x])`` has one: x); None for several."""
    srcs = live_sources(copy, ctx)
    return srcs[0] if srcs is not None and len(srcs) == 1 else None


def _numel(nbytes: int, dtype: str) -> int:
    """Elements in ``nbytes`` of ``dtype`` (1-byte elements for an unknown dtype)."""
    return nbytes // ITEMSIZE.get(dtype, 1)


def _src_dtype(copy: CopyRecord) -> str:
    # The capture leaves src_dtype None when it equals the destination dtype.
    return copy.src_dtype or copy.dtype


def _after(fate: Fate, ctx: TraceIndex) -> str:
    """How a range that is never read again ends: ``freed``, ``overwritten by ...``."""
    if fate.what == "freed":
        return f"freed ({before(ctx, fate.seq)})"
    if fate.what == "overwritten" and fate.seq is not None:
        return f"overwritten by {op_at(ctx, fate.seq)}"
    return "dead when the hunt ended"


@rule("noop")
def noop(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """Source and destination are the same storage and layout: PyTorch returns early."""
    if not copy.noop:
        return None
    return Finding(
        "noop",
        "source and destination are the same storage and layout: PyTorch does no work",
        "drop the call: it copies nothing",
    )


@rule("dead-store")
def dead_store(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """The destination bytes are overwritten or freed before anything reads them."""
    if copy.noop or copy.dst_storage is None or ctx.op(copy.seq) is None:
        return None
    rng, _ = ctx.write_range(copy)
    if rng is None or rng.nbytes == 0:
        return None
    win = ctx.window(copy)
    fate = ctx.fate(copy.dst_storage, rng, copy.seq, win=win)
    if not fate.dies_unread:
        return None
    what = buffer(ctx, copy.dst_storage, rng.nbytes)
    reason = f"the destination ({what}) is {_after(fate, ctx)} before anything reads it"
    if fate.what == "overwritten":
        suggestion = "drop the copy: its bytes are replaced before any use"
    else:
        suggestion = "drop the copy: nothing reads what it writes"
    return Finding("dead-store", reason, suggestion)


@rule("fresh-temporary")
def fresh_temporary(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """The source value was just produced, is read only by this copy, then dies; its producer can
    write the destination (dtype, layout) instead. Every source of a cat must be such a value."""
    pair = _storages(copy, ctx)
    if pair is None or copy.src_device != copy.dst_device:
        return None  # across devices the producer cannot write into the destination
    if op_name(copy.op) in NOT_DESTINATION_PASSABLE:
        return None
    srcs = live_sources(copy, ctx)
    dst_rng, _ = ctx.write_range(copy)
    if not srcs or dst_rng is None:
        return None
    if len(srcs) > 1:
        return _fresh_concat(copy, ctx, srcs, dst_rng)
    (src,) = srcs
    if _numel(copy.bytes, copy.dtype) > _numel(src.rng.nbytes, src.dtype):
        return None  # a broadcast or repeat: the destination holds the source several times
    fresh = fresh_source(copy, ctx, src)
    if fresh is None:
        return None
    h, fate = fresh.history, fresh.fate
    dst = copy.dst_storage
    assert dst is not None and h.producer is not None and h.start is not None  # _storages, fresh_source
    win = ctx.window(copy)
    prod_op = ctx.op(h.producer)
    # Destination passing moves the write of the destination back to where the value began:
    # nobody may read or write the destination from there to this copy (its allocation aside),
    # except one elementwise producer reading exactly those bytes: it can run in place.
    dst_alloc = ctx.allocated_by(dst)
    in_place = False
    if ctx.touched(dst, dst_rng, h.start - 1, copy.seq, ignore=dst_alloc, win=win):
        in_place = _in_place_ok(copy, ctx, h.producer, h.start, dst, dst_rng, dst_alloc, win)
        if not in_place:
            return None
    producer = op_at(ctx, h.producer)
    src_id, nbytes = src.storage, src.rng.nbytes
    if in_place:
        reason = (f"source (a {human_bytes(nbytes)} buffer made by {producer} from the destination) "
                  f"is read only by this copy, then {_after(fate, ctx)}")
        # Accesses carry byte ranges, not strides: a transposed read of the destination looks the
        # same, so the suggestion states the condition it relies on.
        suggestion = (f"compute it in place: the in-place variant of {producer} on the destination "
                      f"(e.g. x.mul_(2) for x.copy_(x * 2); only if it reads the destination in the same layout), then drop this copy")
        return Finding("fresh-temporary", reason, suggestion)
    if prod_op is not None and op_name(prod_op.op) in ALLOC_ONLY_OPS:
        # Only allocated in sight: whatever filled it ran outside the dispatcher. The fix is the
        # same: hand the destination to that code instead of the buffer it allocates.
        made = f"a {human_bytes(nbytes)} buffer allocated by {producer} and filled outside PyTorch's dispatcher"
        reason = f"source ({made}) is read only by this copy, then {_after(fate, ctx)}"
        suggestion = f"hand this copy's destination to the code that allocates the source ({producer}) and fills it (destination passing: out=/output=), then drop this copy"
        return Finding("fresh-temporary", reason, suggestion)
    fresh_buffer = h.allocated and ctx.writer_count(src_id) <= 1
    if fresh_buffer:
        made = f"a fresh {human_bytes(nbytes)} buffer made by {op_at(ctx, h.start)}"
        if h.producer != h.start:
            made += f", last written by {producer}"
    else:
        reused = ctx.writer_count(src_id) > 1  # written again and again: a workspace, not a result buffer
        made = buffer(ctx, src_id, nbytes, "reused" if reused else "")
        name = buffer_name(ctx, src_id)
        if reused:
            name = name.replace(" buffer ", " reused buffer ", 1)
    same_layout = src.contiguous is True and copy.dst_contiguous is True
    if prod_op is not None:
        obstacle = write_obstacle(prod_op.op, prod_op.is_copy, src.dtype, copy.dtype, same_layout)
        if obstacle is not None:
            why, what_for = obstacle
            return Finding("needed", f"source ({made}) is read only by this copy, but {why}", f"keep it: {what_for}")
    if fresh_buffer:
        reason = f"source ({made}) is read only by this copy, then {_after(fate, ctx)}"
        op = ctx.op(copy.seq)
        if op is not None and dst in op.allocs and src.dtype == copy.dtype and same_layout:
            # The copy makes its own destination from a value nobody else wants: the value itself will do.
            suggestion = f"drop this copy and use the result of {producer} itself: it was made for this copy alone"
        else:
            suggestion = f"let {producer} write straight into this copy's destination (destination passing: out=/output= or an in-place variant), then drop this copy"
    else:
        reason = f"source ({made}) was just written by {producer}, is read only by this copy, then {_after(fate, ctx)}"
        suggestion = f"pass this copy's destination to {producer} as its output instead of {name} (output alias), so this copy can be skipped"
    if src.dtype != copy.dtype:
        suggestion += f" (producing {short_dtype(copy.dtype)} directly)"
    if prod_op is not None and prod_op.is_copy:
        suggestion += "; that producer is itself a copy, so one op would do"
    return Finding("fresh-temporary", reason, suggestion)


def _fresh_concat(copy: CopyRecord, ctx: TraceIndex, srcs: tuple[Source, ...], dst_rng: Range) -> Finding | None:
    """A cat of several sources: eliminable only when every one is a fresh value whose producer can
    write its slice of the result; a "needed" explanation when only some could."""
    fresh: list[Fresh] = []
    stale: list[tuple[Source, str]] = []
    for src in srcs:
        f = fresh_source(copy, ctx, src)
        if f is None:
            stale.append((src, NOT_FRESH))
            continue
        prod_op = ctx.op(f.history.producer) if f.history.producer is not None else None
        # A slice of the result is strided unless the cat runs along the outermost dim: only
        # elementwise producers (and copies) write a strided out= without a hidden copy.
        obstacle = None if prod_op is None else write_obstacle(prod_op.op, prod_op.is_copy, src.dtype, copy.dtype, False)
        if obstacle is not None:
            stale.append((src, obstacle[0]))
        else:
            fresh.append(f)
    if not fresh:
        return None
    total = len(sources(copy, ctx) or srcs)
    same = [s for s in srcs if any(o is not s and o.storage == s.storage and o.rng.overlaps(s.rng.start, s.rng.end) for o in srcs)]
    if same:
        # One value in several slices: its producer writes one, the others stay copies.
        first = same[0]
        made = next((op_at(ctx, f.history.producer) for f in fresh if f.source.storage == first.storage and f.history.producer is not None), None)
        what = f"the buffer made by {made}" if made else buffer_name(ctx, first.storage)
        reason = (f"{len(same)} of its sources are the same {human_bytes(first.rng.nbytes)} of {what}: "
                  "a producer can write only one slice, the others must still be copied")
        return Finding("needed", reason, KEEP_REST)
    if stale:
        done = "; ".join(f"a fresh {human_bytes(f.source.rng.nbytes)} buffer made by {op_at(ctx, f.history.producer)}"
                         for f in fresh if f.history.producer is not None)
        rest = "; ".join(f"{buffer_name(ctx, s.storage)}: {why}" for s, why in stale)
        reason = (f"only part of it could be avoided: {_positions([f.source.position for f in fresh])} of {total} ({done}) "
                  f"could be written in place, but {_positions([s.position for s, _ in stale])} ({rest}) must still be copied")
        return Finding("needed", reason, KEEP_REST)
    # Every source is fresh: each producer writes its slice, if the result is untouched meanwhile.
    dst = copy.dst_storage
    assert dst is not None
    begin = min(f.history.start for f in fresh if f.history.start is not None)
    if ctx.touched(dst, dst_rng, begin - 1, copy.seq, ignore=ctx.allocated_by(dst), win=ctx.window(copy)):
        return None
    made = ", ".join(f"a buffer made by {op_at(ctx, f.history.producer)}" for f in fresh if f.history.producer is not None)
    producers = ", ".join(op_at(ctx, f.history.producer) for f in fresh if f.history.producer is not None)
    reason = f"each of its {len(fresh)} sources was made for it alone, is read only by it, then dies: {made}"
    suggestion = f"allocate the result first and let each producer write its slice (out=result[...]): {producers}; then drop this copy"
    return Finding("fresh-temporary", reason, suggestion)


def _positions(positions: list[int]) -> str:
    """``source 2`` or ``sources 1, 3`` (1-based argument positions)."""
    return f"source {positions[0]}" if len(positions) == 1 else "sources " + ", ".join(map(str, positions))


@rule("round-trip")
def round_trip(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """Data copied A -> B and back (or cast and back losslessly) while A kept its value."""
    pair = _storages(copy, ctx)
    win = ctx.window(copy)
    one = _single_source(copy, ctx)
    if pair is None or one is None:
        return None
    _, dst = pair
    src, src_rng = one.storage, one.rng
    _, src_dense = ctx.read_range(copy)
    dst_rng, dst_dense = ctx.write_range(copy)
    if dst_rng is None or not (src_dense and dst_dense):
        return None
    h = ctx.history(src, src_rng, copy.seq, win=win)
    if h.producer is None or h.start != h.producer or h.limited:
        return None  # B must hold exactly what the earlier copy put there
    first = ctx.copy_at(h.producer)
    orig = None if first is None else _single_source(first, ctx)
    if first is None or first.noop or orig is None or first.dst_storage != src:
        return None  # copied out of one buffer A (a cat of several is no round trip)
    a_rng = orig.rng
    _, a_dense = ctx.read_range(first)
    b_rng, _ = ctx.write_range(first)
    if not a_dense or b_rng != src_rng:
        return None
    # Element i must map to element i both ways: same shape, every side contiguous.
    if copy.shape != first.shape or not all(
        flag is True for flag in (orig.contiguous, first.dst_contiguous, one.contiguous, copy.dst_contiguous)
    ):
        return None
    a_dtype = orig.dtype
    if copy.dtype != a_dtype or not lossless(a_dtype, first.dtype) or copy.dst_device != first.src_device:
        return None
    if _numel(a_rng.nbytes, a_dtype) != _numel(dst_rng.nbytes, copy.dtype):
        return None
    a = orig.storage
    if ctx.first_write(a, a_rng, h.producer, copy.seq, win=win) is not None:
        return None  # A changed since: copying back is an update, not a round trip
    there = op_at(ctx, h.producer)
    if dst == a and dst_rng == a_rng:
        reason = f"writes back into {buffer_name(ctx, a)} the values {there} copied out of it; neither side changed since"
        return Finding("round-trip", reason, "drop this copy: the destination already holds these values")
    # Back into a new buffer: equal to A, so A itself would do if neither is written while it lives.
    op = ctx.op(copy.seq)
    if op is None or dst not in op.allocs or not _alias_safe(ctx, dst, a, a_rng, copy.seq, win):
        return None
    reason = f"recreates {buffer_name(ctx, a)} (which {there} copied out) unchanged; neither is written while this copy lives"
    return Finding("round-trip", reason, f"use the original ({buffer_name(ctx, a)}) instead of copying it back")


@rule("chained")
def chained(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """A copy of a copy with nothing in between; the intermediate is read only by this copy."""
    pair = _storages(copy, ctx)
    win = ctx.window(copy)
    one = _single_source(copy, ctx)
    if pair is None or one is None:
        return None
    _, dst = pair
    src, src_rng = one.storage, one.rng
    dst_rng, _ = ctx.write_range(copy)
    if dst_rng is None:
        return None
    h = ctx.history(src, src_rng, copy.seq, win=win)
    if h.producer is None or h.start != h.producer or not h.covering or h.shared:
        return None  # the intermediate must be wholly written by one earlier copy and read by nobody else
    first = ctx.copy_at(h.producer)
    orig = None if first is None else _single_source(first, ctx)
    if first is None or first.noop or orig is None or first.dst_storage != src:
        return None  # made by a copy of one buffer (a cat of several cannot be merged into this copy)
    if not merge_exact(first, copy):
        return None
    if not ctx.fate(src, src_rng, copy.seq, win=win).dies_unread:
        return None
    # One op can run at the first copy's time (destination untouched since) or at this one's
    # (the original unchanged since).
    original_kept = ctx.first_write(orig.storage, orig.rng, h.producer, copy.seq, win=win) is None
    dst_free = not ctx.touched(dst, dst_rng, h.producer - 1, copy.seq, ignore=ctx.allocated_by(dst), win=win)
    if not (original_kept or dst_free):
        return None
    reason = (
        f"copies {buffer(ctx, src, src_rng.nbytes, origin=False)}, which {op_at(ctx, h.producer)} had just copied "
        f"from {buffer_name(ctx, orig.storage)}; nothing else reads it"
    )
    suggestion = f"copy from {buffer_name(ctx, orig.storage)} straight into the destination in one op (e.g. one .to(dtype, memory_format=...) or one copy_)"
    return Finding("chained", reason, suggestion)


@rule("defensive-clone")
def defensive_clone(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """A clone-like copy whose source and result are both never written while the result lives.
    A cat whose other sources are empty is such a copy of its one non-empty source."""
    pair = _storages(copy, ctx)
    win = ctx.window(copy)
    name = op_name(copy.op)
    if pair is None or (name not in ALIASABLE_OPS and name not in CONCAT_OPS):
        return None
    _, dst = pair
    op = ctx.op(copy.seq)
    if op is None or dst not in op.allocs:
        return None  # only a copy that made its own destination can become an alias
    srcs = live_sources(copy, ctx)
    if srcs is None or len(srcs) != 1:
        return None  # several sources side by side: no view of one of them is the result
    (src,) = srcs
    if copy.src_device != copy.dst_device or src.dtype != copy.dtype:
        return None  # an alias cannot change device or dtype
    if not _alias_safe(ctx, dst, src.storage, src.rng, copy.seq, win):
        return None
    if made_by_reshape(copy, ctx):
        return Finding(
            "needed",
            "made by reshape: PyTorch copies only when no view of the source has the new shape, so no alias can replace it",
            "keep it, or change the consumer to take the source's shape (e.g. broadcast over the repeated dim)",
        )
    death, _ = ctx.death(dst, copy.seq, win=win)
    until = f"until it is freed ({before(ctx, death)})" if death is not None else "until it dies"
    if name in CONCAT_OPS and src.contiguous is True:
        reason = (f"its other sources are empty, so it copies {buffer_name(ctx, src.storage)} unchanged; neither the source "
                  f"nor this copy is written {until}: an alias would do")
        return Finding("defensive-clone", reason, "use the non-empty source itself instead of concatenating it with empty tensors")
    unchanged = f"neither the source ({buffer_name(ctx, src.storage)}) nor this copy is written {until}"
    if name in ("repeat", "expand_copy") or copy.bytes > src.rng.nbytes:
        # An expanded view holds the same values with stride 0: fine for a consumer that only
        # reads elementwise, wrong for one that views or writes it. The trace cannot tell which.
        return Finding("needed", f"{unchanged}, but only an expanded (stride-0) view would replace the repeated data, "
                       "and the trace cannot tell whether its consumer accepts one",
                       "keep it, unless its consumer only reads it elementwise: then use expand")
    if src.contiguous is not True and copy.dst_contiguous is not False:
        # The copy makes a contiguous layout; an alias would be strided, and a consumer that views it
        # (reshape, .view, a kernel that wants dense input) would copy or fail. Not provable here.
        return Finding("needed", f"{unchanged}, but it makes a contiguous layout of a strided source, "
                       "and the trace cannot tell whether its consumer needs one",
                       "keep it, unless its consumer takes a strided tensor: then use the source itself")
    return Finding("defensive-clone", f"{unchanged}: an alias would do", "use the source (or a view of it) instead of the copy")


def _in_place_ok(copy: CopyRecord, ctx: TraceIndex, producer: int, start: int, dst: int, dst_rng: Range,
                 dst_alloc: int | None, win: Window) -> bool:
    """True when the single elementwise producer reads exactly the destination's bytes and nothing
    else touches them before the copy: ``x.copy_(x * 2)`` is ``x.mul_(2)``."""
    op = ctx.op(producer)
    if op is None or producer != start or op_name(op.op) not in POINTWISE_OPS or _src_dtype(copy) != copy.dtype:
        return False
    own = [a for a in op.reads if a.storage == dst]
    if len(own) != 1 or not own[0].dense or (own[0].offset, own[0].offset + own[0].nbytes) != (dst_rng.start, dst_rng.end):
        return False
    if any(a.storage == dst for a in op.writes):
        return False
    return not ctx.touched(dst, dst_rng, producer, copy.seq, ignore=dst_alloc, win=win)


def _alias_safe(ctx: TraceIndex, copy_storage: int, src: int, src_rng: Range, seq: int, win: Window) -> bool:
    """True when a copy made at ``seq`` dies inside the trace and neither it nor its source is written meanwhile."""
    death, alive = ctx.death(copy_storage, seq, win=win)
    if death is None and alive:
        return False  # it outlives the hunt: someone may still write it or its source
    info = ctx.storage(copy_storage)
    whole = Range(0, info.nbytes if info is not None else 1 << 62)
    if ctx.first_write(copy_storage, whole, seq, death, win=win) is not None:
        return False
    return ctx.first_write(src, src_rng, seq, death, win=win) is None
