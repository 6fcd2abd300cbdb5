"""The built-in verdict rules (one small pure function per verdict; see ``docs/verdicts.md``).

Every rule reads only the copy record and the trace index, proves its case from recorded reads,
writes, allocations and frees, and otherwise returns None. When the trace cannot prove a case
(a storage still alive when the hunt ended and never read inside it, a walk that hit the scan
limit, a missing op record) the rule stays silent: an unproven copy is "needed".
"""

from __future__ import annotations

from copyhunt.analysis.index import Fate, Range, TraceIndex
from copyhunt.analysis.trust import Window
from copyhunt.analysis.rules import rule
from copyhunt.analysis.wording import ITEMSIZE, buffer, lossless, op_at
from copyhunt.records import CopyRecord, Finding
from copyhunt.text import human_bytes, op_name

#: Ops whose fresh output could be a view of their input instead (clone, contiguous, same-dtype
#: ``to``, ``repeat`` -> ``expand``...). ``cat``, padding and indexed copies are not: no view can
#: express them.
ALIASABLE_OPS = frozenset({
    "clone", "_to_copy", "contiguous", "reshape", "to", "repeat", "expand_copy", "narrow_copy",
    "alias_copy", "view_copy", "permute_copy", "t_copy", "transpose_copy", "slice_copy", "select_copy",
})


#: Copies the producer of a fresh source cannot replace by writing into the destination: the
#: destination holds the source several times (repeat, broadcast) or at scattered indices.
NOT_DESTINATION_PASSABLE = frozenset({
    "repeat", "expand_copy", "index_put_", "index_put", "_index_put_impl_", "_unsafe_index_put",
    "index_copy_", "index_copy",
})

#: Elementwise ops: each output element depends only on the same element of the inputs, so the op
#: may write over an input it reads (``x.copy_(x * 2)`` -> ``x.mul_(2)``). A matmul may not.
POINTWISE_OPS = frozenset({
    "add", "sub", "mul", "div", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "relu", "gelu", "silu",
    "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max", "where", "maximum", "minimum", "reciprocal",
    "sin", "cos", "erf", "floor", "ceil", "round", "sign", "lerp", "addcmul", "addcdiv", "hardtanh",
    "leaky_relu", "elu", "softplus", "mish", "hardswish", "hardsigmoid", "bitwise_and", "bitwise_or",
    "bitwise_xor", "bitwise_not", "logical_not", "masked_fill", "fill", "zeros_like", "ones_like",
})

#: Ops that only allocate: a value "produced" by one was filled by code the dispatcher cannot see
#: (a raw Triton launch, a C++ extension writing through data_ptr).
ALLOC_ONLY_OPS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"})


def _storages(copy: CopyRecord, ctx: TraceIndex) -> tuple[int, int] | None:
    """(source, destination) storages of a real (not noop) copy between two different known
    storages whose op record the trace holds; None otherwise."""
    src, dst = copy.src_storage, copy.dst_storage
    if copy.noop or src is None or dst is None or src == dst or ctx.op(copy.seq) is None:
        return None
    return src, dst


def _numel(nbytes: int, dtype: str) -> int:
    """Elements in ``nbytes`` of ``dtype`` (1-byte elements for an unknown dtype)."""
    return nbytes // ITEMSIZE.get(dtype, 1)


def _src_dtype(copy: CopyRecord) -> str:
    # The capture leaves src_dtype None when it equals the destination dtype.
    return copy.src_dtype or copy.dtype


def _merge_exact(first: CopyRecord, second: CopyRecord) -> bool:
    """True when copying X -> I (first) then I -> D (second) equals one copy X -> D.

    Exact when the first cast loses nothing, or the second casts nothing; a narrowing cast
    followed by another cast rounds on purpose (``x.to(bf16).float()``).
    """
    return lossless(_src_dtype(first), first.dtype) or first.dtype == second.dtype


def _after(fate: Fate, ctx: TraceIndex) -> str:
    """How a range that is never read again ends: ``freed``, ``overwritten by ...``."""
    if fate.what == "freed":
        return f"freed (before #{fate.seq})"
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
    """The source value was just produced, is read only by this copy, then dies."""
    pair = _storages(copy, ctx)
    win = ctx.window(copy)
    if pair is None or copy.src_device != copy.dst_device:
        return None  # across devices the producer cannot write into the destination
    if op_name(copy.op) in NOT_DESTINATION_PASSABLE:
        return None
    src, dst = pair
    src_rng, _ = ctx.read_range(copy)
    dst_rng, _ = ctx.write_range(copy)
    if src_rng is None or dst_rng is None:
        return None
    if op_name(copy.op) in ("copy_", "copy") and _numel(copy.bytes, copy.dtype) > _numel(src_rng.nbytes, _src_dtype(copy)):
        return None  # a broadcast: the destination holds the source several times
    h = ctx.history(src, src_rng, copy.seq, win=win)
    if h.producer is None or h.start is None or h.shared or h.limited or not h.contained:
        return None
    fate = ctx.fate(src, src_rng, copy.seq, win=win)
    if not fate.dies_unread:
        return None
    prod_op = ctx.op(h.producer)
    if prod_op is not None and prod_op.is_copy:
        prod_copy = ctx.copy_at(h.producer)
        if prod_copy is None or not _merge_exact(prod_copy, copy):
            # e.g. x.to(bf16) copied back into fp32: the rounding is the point (and without the
            # producer's copy record, e.g. a version-1 trace filtered while capturing, its dtypes
            # are unknown).
            return None
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
    if in_place:
        reason = (f"source (a {human_bytes(src_rng.nbytes)} buffer #{src} made by {producer} from the destination) "
                  f"is read only by this copy, then {_after(fate, ctx)}")
        # Accesses carry byte ranges, not strides: a transposed read of the destination looks the
        # same, so the suggestion states the condition it relies on.
        suggestion = (f"compute it in place: the in-place variant of {producer} on the destination "
                      f"(e.g. x.mul_(2) for x.copy_(x * 2); only if it reads the destination in the same layout), then drop this copy")
        return Finding("fresh-temporary", reason, suggestion)
    if prod_op is not None and op_name(prod_op.op) in ALLOC_ONLY_OPS:
        # Only allocated in sight: whatever filled it ran outside the dispatcher. The fix is the
        # same: hand the destination to that code instead of the buffer it allocates.
        made = f"a {human_bytes(src_rng.nbytes)} buffer #{src} allocated by {producer} and filled outside PyTorch's dispatcher"
        reason = f"source ({made}) is read only by this copy, then {_after(fate, ctx)}"
        suggestion = f"hand this copy's destination to the code that allocates the source ({producer}) and fills it (destination passing: out=/output=), then drop this copy"
        return Finding("fresh-temporary", reason, suggestion)
    if h.allocated and ctx.writer_count(src) <= 1:
        made = f"a fresh {human_bytes(src_rng.nbytes)} buffer #{src} made by {op_at(ctx, h.start)}"
        if h.producer != h.start:
            made += f", last written by {producer}"
        reason = f"source ({made}) is read only by this copy, then {_after(fate, ctx)}"
        suggestion = f"let {producer} write straight into this copy's destination (destination passing: out=/output= or an in-place variant), then drop this copy"
    else:
        made = buffer(ctx, src, src_rng.nbytes)
        name = f"buffer #{src}"
        if ctx.writer_count(src) > 1:  # written again and again: a workspace, not a result buffer
            made, name = made.replace("buffer #", "reused buffer #"), f"the reused buffer #{src}"
        reason = f"source ({made}) was just written by {producer}, is read only by this copy, then {_after(fate, ctx)}"
        suggestion = f"pass this copy's destination to {producer} as its output instead of {name} (output alias), so this copy can be skipped"
    if _src_dtype(copy) != copy.dtype:
        suggestion += f" (producing {copy.dtype.replace('torch.', '')} directly)"
    if prod_op is not None and prod_op.is_copy:
        suggestion += "; that producer is itself a copy, so one op would do"
    return Finding("fresh-temporary", reason, suggestion)


@rule("round-trip")
def round_trip(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """Data copied A -> B and back (or cast and back losslessly) while A kept its value."""
    pair = _storages(copy, ctx)
    win = ctx.window(copy)
    if pair is None:
        return None
    src, dst = pair
    src_rng, src_dense = ctx.read_range(copy)
    dst_rng, dst_dense = ctx.write_range(copy)
    if src_rng is None or dst_rng is None or not (src_dense and dst_dense):
        return None
    h = ctx.history(src, src_rng, copy.seq, win=win)
    if h.producer is None or h.start != h.producer or h.limited:
        return None  # B must hold exactly what the earlier copy put there
    first = ctx.copy_at(h.producer)
    if first is None or first.noop or first.src_storage is None or first.dst_storage != src:
        return None
    a_rng, a_dense = ctx.read_range(first)
    b_rng, _ = ctx.write_range(first)
    if a_rng is None or not a_dense or b_rng != src_rng:
        return None
    # Element i must map to element i both ways: same shape, every side contiguous.
    if copy.shape != first.shape or not all(
        flag is True for flag in (first.src_contiguous, first.dst_contiguous, copy.src_contiguous, copy.dst_contiguous)
    ):
        return None
    a_dtype = _src_dtype(first)
    if copy.dtype != a_dtype or not lossless(a_dtype, first.dtype) or copy.dst_device != first.src_device:
        return None
    if _numel(a_rng.nbytes, a_dtype) != _numel(dst_rng.nbytes, copy.dtype):
        return None
    a = first.src_storage
    if ctx.first_write(a, a_rng, h.producer, copy.seq, win=win) is not None:
        return None  # A changed since: copying back is an update, not a round trip
    there = op_at(ctx, h.producer)
    if dst == a and dst_rng == a_rng:
        reason = f"writes back into buffer #{a} the values {there} copied out of it; neither side changed since"
        return Finding("round-trip", reason, "drop this copy: the destination already holds these values")
    # Back into a new buffer: equal to A, so A itself would do if neither is written while it lives.
    op = ctx.op(copy.seq)
    if op is None or dst not in op.allocs or not _alias_safe(ctx, dst, a, a_rng, copy.seq, win):
        return None
    reason = f"recreates buffer #{a} (which {there} copied out) unchanged; neither is written while this copy lives"
    return Finding("round-trip", reason, f"use the original (buffer #{a}) instead of copying it back")


@rule("chained")
def chained(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """A copy of a copy with nothing in between; the intermediate is read only by this copy."""
    pair = _storages(copy, ctx)
    win = ctx.window(copy)
    if pair is None:
        return None
    src, dst = pair
    src_rng, _ = ctx.read_range(copy)
    dst_rng, _ = ctx.write_range(copy)
    if src_rng is None or dst_rng is None:
        return None
    h = ctx.history(src, src_rng, copy.seq, win=win)
    if h.producer is None or h.start != h.producer or not h.covering or h.shared:
        return None  # the intermediate must be wholly written by one earlier copy and read by nobody else
    first = ctx.copy_at(h.producer)
    if first is None or first.noop or first.src_storage is None or first.dst_storage != src:
        return None
    if not _merge_exact(first, copy):
        return None
    if not ctx.fate(src, src_rng, copy.seq, win=win).dies_unread:
        return None
    # One op can run at the first copy's time (destination untouched since) or at this one's
    # (the original unchanged since).
    x_rng, _ = ctx.read_range(first)
    original_kept = x_rng is not None and ctx.first_write(first.src_storage, x_rng, h.producer, copy.seq, win=win) is None
    dst_free = not ctx.touched(dst, dst_rng, h.producer - 1, copy.seq, ignore=ctx.allocated_by(dst), win=win)
    if not (original_kept or dst_free):
        return None
    reason = (
        f"copies {buffer(ctx, src, src_rng.nbytes)}, which {op_at(ctx, h.producer)} had just copied "
        f"from buffer #{first.src_storage}; nothing else reads it"
    )
    suggestion = f"copy from buffer #{first.src_storage} straight into the destination in one op (e.g. one .to(dtype, memory_format=...) or one copy_)"
    return Finding("chained", reason, suggestion)


@rule("defensive-clone")
def defensive_clone(copy: CopyRecord, ctx: TraceIndex) -> Finding | None:
    """A clone-like copy whose source and result are both never written while the result lives."""
    pair = _storages(copy, ctx)
    win = ctx.window(copy)
    if pair is None or op_name(copy.op) not in ALIASABLE_OPS:
        return None
    src, dst = pair
    op = ctx.op(copy.seq)
    if op is None or dst not in op.allocs:
        return None  # only a copy that made its own destination can become an alias
    if copy.src_device != copy.dst_device or _src_dtype(copy) != copy.dtype:
        return None  # an alias cannot change device or dtype
    src_rng, _ = ctx.read_range(copy)
    if src_rng is None or not _alias_safe(ctx, dst, src, src_rng, copy.seq, win):
        return None
    death, _ = ctx.death(dst, copy.seq, win=win)
    until = f"until it is freed (before #{death})" if death is not None else "until it dies"
    reason = f"neither the source (buffer #{src}) nor this copy is written {until}: an alias would do"
    suggestion = "use the source (or a view of it) instead of the copy"
    if op_name(copy.op) == "repeat" or (copy.bytes > src_rng.nbytes and copy.src_contiguous is not False):
        suggestion = "use an expanded view (expand) instead of repeating the data, if the consumer only reads it"
    elif copy.src_contiguous is False and copy.dst_contiguous is not False:
        suggestion += "; this copy makes a contiguous layout: keep it only if the consumer needs one"
    return Finding("defensive-clone", reason, suggestion)


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
