"""Per-op knowledge of the aten ops that copy tensor data (pattern: torch/utils/flop_counter.py).

``COPY_OPS`` maps an aten overload to a small function ``(args, kwargs, out) -> CopyFacts | None`` that
names the source tensor(s), the destination, the bytes written and whether PyTorch did no work.
``None`` means "this call did not copy". The functions run right after the op, inside the dispatch mode;
they must not keep the tensors they are given.

Only ops that reach the dispatch mode belong here: composite ops (``contiguous``, ``reshape``, ``to``,
``concat``...) never do, since the mode runs their C++ composite kernel and sees what it calls (``clone``,
``_to_copy``, ``cat``), or nothing when it returns its input (``capture/dispatch.py``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import torch

aten = torch.ops.aten


class CopyFacts(NamedTuple):
    """What one copy did: sources, destination, bytes written, and whether it was a no-op."""

    srcs: tuple[torch.Tensor, ...]
    dst: torch.Tensor
    nbytes: int
    noop: bool = False
    exact: bool = True  # False when the byte count is a bound (a bool-mask index on a GPU)
    to_host_value: bool = False  # the destination is a Python number: ``dst`` only describes it (no storage)


CopyFn = Callable[[tuple[Any, ...], dict[str, Any], Any], "CopyFacts | None"]

#: aten overload -> copy facts function. Filled by @register_copy.
COPY_OPS: dict[Any, CopyFn] = {}


def register_copy(*ops: Any) -> Callable[[CopyFn], CopyFn]:
    """Decorator: register ``fn`` as the copy-facts function of each aten overload in ``ops``."""

    def deco(fn: CopyFn) -> CopyFn:
        for op in ops:
            COPY_OPS[op] = fn
        return fn

    return deco


def _nbytes(t: torch.Tensor) -> int:
    try:
        return t.numel() * t.element_size()
    except RuntimeError:
        return 0  # a layout without a numel (some nested tensors): the count is unknown


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same storage, offset, shape, strides and dtype: copying one onto the other changes nothing."""
    return (
        a.data_ptr() == b.data_ptr()  # cheap first test: almost every real copy fails here
        and a.dtype == b.dtype
        and a.device == b.device
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.storage_offset() == b.storage_offset()
        and a.untyped_storage()._cdata == b.untyped_storage()._cdata
    )


# --- plain copies: the output (or self) is written from one source -------------------------


@register_copy(aten.copy_.default)
def _copy_(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    dst, src = args[0], _arg(args, kwargs, 1, "src")
    # copy_ writes every element of self, whatever the broadcast of src.
    return CopyFacts((src,), dst, _nbytes(dst), noop=_same_layout(dst, src))


@register_copy(aten.copy.default)
def _copy_functional(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    return CopyFacts((_arg(args, kwargs, 1, "src"),), out, _nbytes(out))


@register_copy(
    aten.clone.default,
    aten._to_copy.default,
    aten.repeat.default,
    aten.constant_pad_nd.default,
    aten.narrow_copy.default,
    aten.expand_copy.default,
)
def _fresh_from_self(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    # The output is a new tensor filled from args[0]; every output byte is written.
    return CopyFacts((args[0],), out, _nbytes(out))


@register_copy(aten.slice_scatter.default, aten.select_scatter.default, aten.diagonal_scatter.default)
def _scatter_functional(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    # Functional scatter: the output is a full copy of self with src written into a part of it.
    return CopyFacts((args[0], _arg(args, kwargs, 1, "src")), out, _nbytes(out))


# --- reading a device tensor's value on the host ---------------------------------------------


@register_copy(aten._local_scalar_dense.default)
def _scalar_to_host(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts | None:
    # Tensor.item() (and bool(t), int(t), float(t), which call it) ends here: on a device tensor it
    # copies the element to the host and waits for the device. On the CPU it only reads memory.
    src = args[0]
    if src.is_cpu:
        return None
    # The host side is a Python number, not a tensor: a 0-dim CPU stand-in describes it (device,
    # dtype, shape); it is not kept and gets no storage id.
    return CopyFacts((src,), torch.empty((), dtype=src.dtype), src.element_size(), to_host_value=True)


# --- concatenation -------------------------------------------------------------------------


@register_copy(aten.cat.default, aten.stack.default)
def _cat(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    tensors = tuple(_arg(args, kwargs, 0, "tensors"))
    return CopyFacts(tensors, out, _nbytes(out))


@register_copy(aten.cat.out, aten.stack.out)
def _cat_out(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    tensors = tuple(_arg(args, kwargs, 0, "tensors"))
    dst = kwargs["out"] if "out" in kwargs else out
    return CopyFacts(tensors, dst, _nbytes(dst))


# --- indexed writes ------------------------------------------------------------------------


def _indexed_numel(self: torch.Tensor, indices: Sequence[torch.Tensor | None]) -> tuple[int, bool]:
    """Elements selected by advanced indexing ``self[indices]`` (and whether the count is exact)."""
    exact = True
    idx_shapes: list[tuple[int, ...]] = []
    unindexed = 1  # product of the dims left whole by a None index
    pos = 0  # next dim of self not yet consumed by an index
    for ix in indices:
        if ix is None:
            unindexed *= self.shape[pos]
            pos += 1
        elif ix.dtype in (torch.bool, torch.uint8):
            pos += ix.dim()
            if ix.device.type == "cpu":
                # Counting a mask is free on the CPU; on a GPU it would force a sync (and break
                # CUDA-graph capture), so there the count stays a bound.
                idx_shapes.append((int(torch.count_nonzero(ix)),))
            else:
                idx_shapes.append((ix.numel(),))
                exact = False
        else:
            pos += 1
            idx_shapes.append(tuple(ix.shape))
    broadcast = torch.broadcast_shapes(*idx_shapes) if idx_shapes else ()
    rest = self.shape[pos:]
    return math.prod(broadcast) * unindexed * math.prod(rest), exact


@register_copy(aten.index_put_.default, aten._index_put_impl_.default)
def _index_put_(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    dst, indices, values = args[0], _arg(args, kwargs, 1, "indices"), _arg(args, kwargs, 2, "values")
    n, exact = _indexed_numel(dst, indices)
    return CopyFacts((values,), dst, n * dst.element_size(), exact=exact)


@register_copy(aten.index_put.default, aten._unsafe_index_put.default)
def _index_put(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    # Functional form: a full copy of self, then the indexed write.
    return CopyFacts((args[0], _arg(args, kwargs, 2, "values")), out, _nbytes(out))


@register_copy(aten.index_copy_.default)
def _index_copy_(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    dst, source = args[0], _arg(args, kwargs, 3, "source")
    # Every element of ``source`` lands in self: numel(source) elements of self's dtype.
    return CopyFacts((source,), dst, source.numel() * dst.element_size())


@register_copy(aten.index_copy.default)
def _index_copy(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> CopyFacts:
    return CopyFacts((args[0], _arg(args, kwargs, 3, "source")), out, _nbytes(out))
