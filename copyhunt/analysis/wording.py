"""Small pure helpers the verdict rules share: naming ops and sites, sizes, dtype facts."""

from __future__ import annotations

from copyhunt.analysis.index import TraceIndex
from copyhunt.text import file_name, human_bytes, op_label

__all__ = ["ITEMSIZE", "lossless", "op_at", "buffer", "buffer_name", "made_by", "before"]

#: Bytes per element, keyed by the dtype strings the capture writes (``str(torch.float32)``).
ITEMSIZE = {
    "torch.float64": 8, "torch.float32": 4, "torch.float16": 2, "torch.bfloat16": 2,
    "torch.float8_e4m3fn": 1, "torch.float8_e5m2": 1, "torch.float8_e4m3fnuz": 1, "torch.float8_e5m2fnuz": 1,
    "torch.int64": 8, "torch.int32": 4, "torch.int16": 2, "torch.int8": 1, "torch.uint8": 1,
    "torch.bool": 1, "torch.complex64": 8, "torch.complex128": 16,
}

# dtype -> dtypes that hold every one of its values exactly (a cast there and back is lossless).
_EXACT_IN = {
    "torch.bool": ("torch.uint8", "torch.int8", "torch.int16", "torch.int32", "torch.int64",
                   "torch.float16", "torch.bfloat16", "torch.float32", "torch.float64"),
    "torch.uint8": ("torch.int16", "torch.int32", "torch.int64", "torch.float16", "torch.float32", "torch.float64"),
    "torch.int8": ("torch.int16", "torch.int32", "torch.int64", "torch.float16", "torch.float32", "torch.float64"),
    "torch.int16": ("torch.int32", "torch.int64", "torch.float32", "torch.float64"),
    "torch.int32": ("torch.int64", "torch.float64"),
    "torch.float16": ("torch.float32", "torch.float64"),
    "torch.bfloat16": ("torch.float32", "torch.float64"),
    "torch.float32": ("torch.float64",),
    "torch.float8_e4m3fn": ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64"),
    "torch.float8_e5m2": ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64"),
}


def lossless(src_dtype: str, dst_dtype: str) -> bool:
    """True when casting ``src_dtype`` to ``dst_dtype`` keeps every value exactly."""
    return src_dtype == dst_dtype or dst_dtype in _EXACT_IN.get(src_dtype, ())


def op_at(ctx: TraceIndex, seq: int) -> str:
    """``aten.mm at model.py:12`` (file name only: reasons stay one short line), or ``aten.mm (#seq)``."""
    op = ctx.op(seq)
    if op is None:
        return f"op #{seq}"
    if op.site is None:
        return f"{op_label(op.op)} (#{seq})"
    return f"{op_label(op.op)} at {file_name(op.site.file)}:{op.site.line}"


def made_by(ctx: TraceIndex, storage: int) -> str:
    """Where a buffer came from, in the reader's terms: ``made by aten.add at m.py:4``.

    Buffers are named by the op (and line) that allocated them, never by copyhunt's internal numbers;
    one allocated before the hunt started (a weight, an input) by the first op that used it.
    """
    seq = ctx.allocated_by(storage)
    if seq is not None and ctx.op(seq) is not None:
        return f"made by {op_at(ctx, seq)}"
    first = ctx.first_use(storage)
    if first is not None and ctx.op(first) is not None:
        return f"made before the hunt, first used by {op_at(ctx, first)}"
    return "made before the hunt"


def buffer_name(ctx: TraceIndex, storage: int) -> str:
    """``the buffer made by aten.add at m.py:4`` (or ``the buffer made before the hunt, first used by ...``)."""
    return f"the buffer {made_by(ctx, storage)}"


def buffer(ctx: TraceIndex, storage: int, nbytes: int, adjective: str = "", origin: bool = True) -> str:
    """``a 16 B buffer made by aten.add at m.py:4``, or ``1.5 KiB of the 6.0 KiB buffer made by ...``
    when the range is a part of it. ``adjective``: ``reused``, ``fresh``...; ``origin=False`` leaves
    out where it was made (when the sentence says it anyway)."""
    info = ctx.storage(storage)
    kind = f"{adjective} " if adjective else ""
    where = f" {made_by(ctx, storage)}" if origin else ""
    if info is None or info.nbytes <= nbytes:
        return f"a {kind}{human_bytes(nbytes)} buffer{where}"
    return f"{human_bytes(nbytes)} of {'the' if origin else 'a'} {kind}{human_bytes(info.nbytes)} buffer{where}"


def before(ctx: TraceIndex, seq: int) -> str:
    """``before aten.mul at m.py:7`` (the op that ran next), in place of an op number."""
    return f"before {op_at(ctx, seq)}"
