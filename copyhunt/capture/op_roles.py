"""What an op does to its tensor arguments (read, write, both, or alias only), from its schema.

Written args come from ``func._schema.arguments[i].alias_info.is_write`` (``out=`` args included).
In-place ops that read-modify-write (``add_``) count as read + write; pure overwrites (``copy_``,
``out=`` args, ``fill_`` / ``zero_``...) as write only; view ops (args the output aliases) neither.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

aten = torch.ops.aten

# Argument roles.
READ, WRITE, RW, VIEW = 0, 1, 2, 3

#: In-place ops that overwrite their destination without reading it.
OVERWRITE_OPS = {
    aten.copy_.default,
    aten.fill_.Scalar,
    aten.fill_.Tensor,
    aten.zero_.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
    aten.index_copy_.default,
    aten.masked_fill_.Scalar,
    aten.masked_fill_.Tensor,
    aten.masked_scatter_.default,
    aten.index_fill_.int_Scalar,
    aten.index_fill_.int_Tensor,
    aten.normal_.default,
    aten.uniform_.default,
    aten.random_.default,
    aten.bernoulli_.float,
    aten.exponential_.default,
}
#: Of those, ops that write only some elements: their write access is never "dense".
PARTIAL_WRITE_OPS = {
    aten.index_put_.default,
    aten._index_put_impl_.default,
    aten.index_copy_.default,
    aten.masked_fill_.Scalar,
    aten.masked_fill_.Tensor,
    aten.masked_scatter_.default,
    aten.index_fill_.int_Scalar,
    aten.index_fill_.int_Tensor,
}
#: index_put_ with accumulate=True adds into self: a read-modify-write. Value: position of the flag.
ACCUMULATE_ARG = {aten.index_put_.default: 3, aten._index_put_impl_.default: 3}
#: In-place ops that change metadata only: no data read or written.
META_INPLACE_OPS = {
    aten.resize_.default,
    aten.detach_.default,
    aten.as_strided_.default,
    aten.squeeze_.default,
    aten.squeeze_.dim,
    aten.unsqueeze_.default,
    aten.t_.default,
    aten.transpose_.default,
    aten.set_.source_Storage,
    aten.set_.source_Tensor,
}

#: Factory ops that take only the shape, dtype and device of their tensor argument, never its data:
#: ``out = torch.empty_like(y); out.copy_(y)`` must not count as a read of ``y`` before the copy.
METADATA_ONLY_OPS = {
    getattr(getattr(aten, name), overload)
    for name, overload in (
        ("empty_like", "default"),
        ("zeros_like", "default"),
        ("ones_like", "default"),
        ("full_like", "default"),
        ("rand_like", "default"),
        ("randn_like", "default"),
        ("randint_like", "default"),
        ("randint_like", "low_dtype"),
        ("new_empty", "default"),
        ("new_empty_strided", "default"),
        ("new_zeros", "default"),
        ("new_ones", "default"),
        ("new_full", "default"),
    )
    if hasattr(aten, name) and overload in getattr(aten, name).overloads()
}


class Plan(NamedTuple):
    """Per-op facts computed once from the schema."""

    name: str  # "aten.add.Tensor"
    args: tuple[tuple[int, str, int], ...]  # (position, name, role) of tensor arguments, VIEW ones left out
    skip_outputs: bool  # every return aliases an argument (in-place, out=, views): nothing new to see
    partial: bool  # writes touch only some elements
    accumulate_pos: int | None
    copy_fn: Any  # the copy-facts function of a copy op (copy_ops.COPY_OPS), else None


def make_plan(func: Any, copy_fn: Any = None) -> Plan:
    """The read/write roles of ``func``'s tensor arguments."""
    schema = func._schema
    specs: list[tuple[int, str, int]] = []
    for i, a in enumerate(schema.arguments):
        if "Tensor" not in str(a.type):
            continue
        ai = a.alias_info
        if func in META_INPLACE_OPS or func in METADATA_ONLY_OPS:
            role = VIEW  # metadata only: no data read or written
        elif ai is not None and ai.is_write:
            role = WRITE if (func in OVERWRITE_OPS or a.kwarg_only) else RW
        elif ai is not None:
            role = VIEW  # the output aliases this argument: a view, no data moves
        else:
            role = READ
        if role != VIEW:
            specs.append((i, a.name, role))
    returns = schema.returns
    skip_outputs = bool(returns) and all(r.alias_info is not None for r in returns)
    return Plan(str(func), tuple(specs), skip_outputs, func in PARTIAL_WRITE_OPS, ACCUMULATE_ARG.get(func), copy_fn)
