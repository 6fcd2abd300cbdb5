"""What ops can do instead of a copy: alias, write a destination of another dtype or layout (issue 11).

The verdict rules only suggest a change that can be written. These tables say which ops can take
the destination a copy writes (``out=``) in its dtype and layout; ``tests/test_op_facts.py`` checks
them against torch itself, so a torch that changes an op's ``out=`` rules fails a test, not a user.
Pure data and functions on op names and dtype strings: no torch import.
"""

from __future__ import annotations

from copyhunt.text import op_label, op_name

#: Ops whose fresh output could be a view of their input instead (clone, contiguous, same-dtype
#: ``to``, ``repeat`` -> ``expand``...). ``cat`` only with a single non-empty source (the rules check
#: that); padding and indexed copies never: no view can express them.
ALIASABLE_OPS = frozenset({
    "clone", "_to_copy", "contiguous", "reshape", "to", "repeat", "expand_copy", "narrow_copy",
    "alias_copy", "view_copy", "permute_copy", "t_copy", "transpose_copy", "slice_copy", "select_copy",
})

#: Copies that write several sources side by side into one destination.
CONCAT_OPS = frozenset({"cat", "stack"})

#: Copies the producer of a fresh source cannot replace by writing into the destination: the
#: destination holds the source several times (repeat, broadcast) or at scattered indices.
NOT_DESTINATION_PASSABLE = frozenset({
    "repeat", "expand_copy", "index_put_", "index_put", "_index_put_impl_", "_unsafe_index_put",
    "index_copy_", "index_copy", "constant_pad_nd",
})

#: Elementwise ops: each output element depends only on the same element of the inputs, so the op
#: may write over an input it reads (``x.copy_(x * 2)`` -> ``x.mul_(2)``) and writes any strided
#: ``out=`` of its own dtype in place (no hidden copy). A matmul may not.
POINTWISE_OPS = frozenset({
    "add", "sub", "mul", "div", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "relu", "gelu", "silu",
    "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max", "where", "maximum", "minimum", "reciprocal",
    "sin", "cos", "erf", "floor", "ceil", "round", "sign", "lerp", "addcmul", "addcdiv", "hardtanh",
    "leaky_relu", "elu", "softplus", "mish", "hardswish", "hardsigmoid", "bitwise_and", "bitwise_or",
    "bitwise_xor", "bitwise_not", "logical_not", "masked_fill", "fill", "zeros_like", "ones_like",
    "eq", "ne", "gt", "ge", "lt", "le", "logical_and", "logical_or", "logical_xor", "exp2", "expm1",
    "log1p", "log2", "log10", "tan", "erfc", "sinh", "cosh", "asin", "acos", "atan", "fmod", "remainder",
    "atan2", "floor_divide", "xlogy", "copysign",
})

#: Pointwise ops whose ``out=`` may have another dtype than their result: they compute in the result
#: dtype and cast on the write, when torch allows that cast (``torch.can_cast``). Measured on torch 2.13:
#: ``torch.gt(x, 0, out=<int64>)`` works, ``torch.mul(x, 2.5, out=<int64>)`` raises (a float result),
#: ``torch.neg(x, out=<float64>)`` raises (unary ops like neg, abs, floor, where keep their dtype).
CAST_ON_WRITE_OPS = frozenset({
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "fmod", "remainder", "atan2", "floor_divide",
    "xlogy", "copysign", "eq", "ne", "gt", "ge", "lt", "le", "logical_and", "logical_or", "logical_xor",
    "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor", "exp", "exp2", "expm1", "log", "log1p", "log2",
    "log10", "sqrt", "rsqrt", "sigmoid", "sin", "cos", "tan", "tanh", "erf", "erfc", "reciprocal", "sinh",
    "cosh", "asin", "acos", "atan",
})

#: Ops that only allocate: a value "produced" by one was filled by code the dispatcher cannot see
#: (a raw Triton launch, a C++ extension writing through data_ptr).
ALLOC_ONLY_OPS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"})

# dtype -> its category for casting: bool < integers < floating < complex (torch.can_cast's order).
_CATEGORY = {"torch.bool": 0, "torch.complex64": 3, "torch.complex128": 3, "torch.complex32": 3}


def _category(dtype: str) -> int:
    if dtype in _CATEGORY:
        return _CATEGORY[dtype]
    return 2 if ("float" in dtype or dtype == "torch.half") else 1


def can_cast(src: str, dst: str) -> bool:
    """``torch.can_cast`` on dtype strings: casting never moves to a lower category (float -> int, any -> bool)."""
    return _category(dst) >= _category(src)


def short_dtype(dtype: str) -> str:
    """``torch.float32`` -> ``float32``."""
    return dtype.replace("torch.", "")


def write_obstacle(op: str, is_copy: bool, result_dtype: str, dst_dtype: str, same_layout: bool) -> tuple[str, str] | None:
    """Why the producing op ``op`` (``aten.mul.Tensor``) cannot write a copy's destination itself, or None.

    ``result_dtype`` is the dtype the producer makes, ``dst_dtype`` the one the copy writes;
    ``same_layout`` is True when source and destination are both contiguous. Returns (reason, what the
    copy is for). A copy op can write any dtype and layout (one op instead of two).
    """
    producer, shown = op_name(op), op_label(op)
    if producer in CONCAT_OPS and not can_cast(result_dtype, dst_dtype):
        # torch.cat(..., out=<int64>) of float inputs raises TypeError "input types can't be cast to the desired output type"
        want, got = short_dtype(dst_dtype), short_dtype(result_dtype)
        return (f"{shown} cannot write {want} itself: out= does not cast {got} to {want}",
                f"this copy is how the value becomes {want}")
    if is_copy or producer in ALLOC_ONLY_OPS:
        return None  # a copy writes anything (.to casts any way); code outside the dispatcher: the reason hedges
    if result_dtype != dst_dtype:
        want, got = short_dtype(dst_dtype), short_dtype(result_dtype)
        if producer not in CAST_ON_WRITE_OPS:
            return (f"{shown} cannot write {want} itself: its out= must be {got}, its result dtype",
                    f"this copy is how the value becomes {want}")
        if not can_cast(result_dtype, dst_dtype):
            return (f"{shown} cannot write {want} itself: out= does not cast {got} to {want}",
                    f"this copy is how the value becomes {want}")
    if not same_layout and producer not in POINTWISE_OPS:
        return (f"{shown} is not elementwise: whether its out= writes this copy's layout without a copy of its own "
                "depends on its kernel, which the trace cannot see",
                "this copy is how the value gets its layout, unless the producer's kernel writes that layout itself")
    return None
