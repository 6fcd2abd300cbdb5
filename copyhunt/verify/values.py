"""Views, values and places of one op call, for the re-run's hooks (``elide.py``).

Values are changed in two ways only: "inverted" (every element's bits flipped, ``logical_not`` for
bool: a value that differs from the original in every element, so a reader of bytes that should be
dead cannot match by luck) and "set aside" (a snapshot of a view's elements, with the same shape and
strides, in a buffer of its own).
"""

from __future__ import annotations

from typing import Any

import torch

from copyhunt.analysis.op_facts import CONCAT_OPS
from copyhunt.text import op_name
from copyhunt.verify.replay import Elision, Where

_INTS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def invert(v: torch.Tensor) -> None:
    """Flip every element of ``v`` in place (each element once, however ``v`` is strided)."""
    if v.numel() == 0:
        return
    for d in range(v.dim()):
        if v.stride(d) == 0 and v.shape[d] > 1:
            v = v.narrow(d, 0, 1)  # a broadcast dim: its elements are one element
    if torch._debug_has_internal_overlap(v) == 1:
        raise Elision("cannot invert a view whose elements overlap")
    with torch.inference_mode():
        if v.dtype == torch.bool:
            v.logical_not_()
        elif v.is_complex() or v.element_size() not in _INTS:
            raise Elision(f"cannot invert {v.dtype} values")
        else:
            v.view(_INTS[v.element_size()]).bitwise_not_()


def snapshot(v: torch.Tensor) -> torch.Tensor:
    """A copy of ``v``'s elements with ``v``'s shape and strides, in a buffer of its own."""
    es = v.element_size()
    lo = v.storage_offset() * es
    span = (1 + sum((n - 1) * s for n, s in zip(v.shape, v.stride()))) * es if v.numel() else 0
    with torch.inference_mode():
        raw = torch.empty(0, dtype=torch.uint8, device=v.device)
        raw.set_(v.untyped_storage(), 0, (v.untyped_storage().nbytes(),), (1,))
        buf = raw[lo : lo + span].clone()
        out = torch.empty(0, dtype=v.dtype, device=v.device)
        return out.set_(buf.untyped_storage(), 0, tuple(v.shape), tuple(v.stride()))


def at(where: Where, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> torch.Tensor:
    """The tensor at ``where`` in an op call."""
    kind, key, j = where
    if kind == "o":
        outs = out if isinstance(out, (list, tuple)) else (out,)
        item = outs[key]
    else:
        item = args[key] if kind == "a" else kwargs[key]
        if j >= 0:
            item = item[j]
    if not isinstance(item, torch.Tensor):
        raise Elision(f"no tensor at {where}")
    return item


def keep(t: torch.Tensor) -> torch.Tensor:
    """A new tensor object on ``t``'s storage, to hold past the op that returned ``t``.

    Holding the op's own output object changes what torch dispatches next (it detaches a returned
    tensor that is referenced elsewhere): the re-run's op numbers would shift.
    """
    return torch.ops.aten.alias.default(t)


def substitute(args: tuple[Any, ...], kwargs: dict[str, Any], new: dict[Where, torch.Tensor]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's args and kwargs with the tensors at ``new``'s places replaced."""
    a, k = list(args), dict(kwargs)
    for (kind, key, j), t in new.items():
        if kind == "a":
            a[key] = t if j < 0 else _set(a[key], j, t)
        elif kind == "k":
            k[key] = t if j < 0 else _set(k[key], j, t)
        else:
            raise Elision("an output cannot be an input")
    return tuple(a), k


def _set(seq: Any, j: int, t: torch.Tensor) -> Any:
    items = list(seq)
    items[j] = t
    return type(seq)(items) if isinstance(seq, tuple) else items


# --- where a copy's sources and destination are ---------------------------------------------------


def copy_places(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Where], Where, bool]:
    """(source places in order, destination place, in place?) of a copy op call."""
    name = op_name(op)
    if name == "copy_":
        src: Where = ("a", 1, -1) if len(args) > 1 else ("k", "src", -1)
        return [src], ("a", 0, -1), True
    if name in CONCAT_OPS:
        listed = args[0] if args else kwargs["tensors"]
        where_list = ("a", 0) if args else ("k", "tensors")
        srcs = [(where_list[0], where_list[1], j) for j in range(len(listed))]
        if "out" in kwargs:
            return srcs, ("k", "out", -1), True
        return srcs, ("o", 0, -1), False
    return [("a", 0, -1)], ("o", 0, -1), False


def out_variant(name: str) -> Any:
    """The ``out=`` overload of an aten op (``aten.mul.Tensor`` -> ``aten.mul.out``), itself for an out=
    op, or None. The overload must take the same arguments plus ``out``."""
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        return None
    packet = getattr(torch.ops.aten, parts[1], None)
    if packet is None:
        return None
    own = getattr(packet, parts[2])
    names = [a.name for a in own._schema.arguments]
    if "out" in names:
        return own
    for candidate in ("out",) if parts[2] == "default" else (f"{parts[2]}_out", "out"):
        if candidate in packet.overloads():
            op = getattr(packet, candidate)
            theirs = [a.name for a in op._schema.arguments]
            if theirs == [*names, "out"]:
                return op
    return None
