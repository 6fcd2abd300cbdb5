"""The copies of one Inductor-compiled graph: the data model, and what FX nodes say about each copy.

``inductor.py`` decides, from Inductor's scheduler at the end of a compile, which copy nodes
of the final post-grad FX graph survive and how Inductor runs them; the result is a ``CompiledGraph``
of ``GraphCopy`` entries, built here from the nodes (op, bytes from the fake value ``meta["val"]``,
user frames from ``meta["stack_trace"]``, module path from ``meta["nn_module_stack"]``).

A copy node is a *surviving* copy when Inductor materialises its result in a buffer; one only inlined
into its consumers (a ``clone`` read straight by a pointwise kernel) moves no data of its own and is
counted as removed. A surviving copy is *fused* when its kernel also computes something (no separate
pass over memory); otherwise it is a copy kernel of its own, or an extern call. Nothing here keeps a
tensor (fake values are read for sizes, then dropped) or judges anything. Sizes may be symbolic (a
dynamic-shape recompile): they stay sympy expressions, bound from each execution's inputs
(:meth:`CompiledGraph.bytes_for`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from copyhunt.capture.copy_ops import COPY_OPS
from copyhunt.capture.recording import copy_kind
from copyhunt.records import Frame

#: Graph copy ops -> the op an eager trace records for the same user code, so that sites of an eager
#: and a compiled trace of one program compare (``copyhunt diff``). Inductor's decompositions rename
#: some: ``.to(dtype)`` is ``prims.convert_element_type`` after AOTAutograd, a slice assignment is a
#: functional ``slice_scatter``, and functional ``index_put`` / ``index_copy`` stand for the in-place
#: forms the user wrote when reinplacing could not turn them back.
COPY_TARGETS: dict[str, str] = {
    "aten.copy_.default": "aten.copy_.default",
    "aten.copy.default": "aten.copy_.default",
    "aten.clone.default": "aten.clone.default",
    "aten._to_copy.default": "aten._to_copy.default",
    "prims.convert_element_type.default": "aten._to_copy.default",
    "prims.device_put.default": "aten._to_copy.default",
    "aten.cat.default": "aten.cat.default",
    "aten.stack.default": "aten.stack.default",
    "aten.repeat.default": "aten.repeat.default",
    "aten.constant_pad_nd.default": "aten.constant_pad_nd.default",
    "aten.index_put_.default": "aten.index_put_.default",
    "aten.index_put.default": "aten.index_put_.default",
    "aten._unsafe_index_put.default": "aten.index_put_.default",
    "aten.index_copy_.default": "aten.index_copy_.default",
    "aten.index_copy.default": "aten.index_copy_.default",
    "aten.slice_scatter.default": "aten.copy_.default",
    "aten.select_scatter.default": "aten.copy_.default",
}

#: Ops that only reinterpret memory (no data moves): not "compute" when deciding whether a kernel
#: holding a copy also computes something.
_VIEW_NAMES = frozenset({
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "slice", "select",
    "squeeze", "unsqueeze", "as_strided", "alias", "unfold", "diagonal", "split", "split_with_sizes",
    "view_as_real", "view_as_complex", "unbind", "narrow", "getitem", "detach",
})

_FRAME_RE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)')


#: Dynamo names the function that resumes after a graph break ``torch_dynamo_resume_in_f_at_12``;
#: the user wrote ``f``, and an eager trace of the same line says ``f``.
_RESUME_RE = re.compile(r"^torch_dynamo_resume_in_(?P<func>.+)_at_\d+$")


def user_function(name: str) -> str:
    """The function the user wrote for a Dynamo resume function's name (else ``name`` itself)."""
    resumed = _RESUME_RE.match(name)
    return resumed["func"] if resumed else name


def parse_stack_trace(text: str | None) -> tuple[Frame, ...]:
    """Frames of an FX node's ``stack_trace`` (Python traceback text), innermost first."""
    if not text:
        return ()
    frames = []
    for m in _FRAME_RE.finditer(text):
        frames.append(Frame(m["file"], int(m["line"]), user_function(m["func"].strip())))
    frames.reverse()
    return tuple(frames)


def qualified_name(target: Any) -> str:
    """An FX target's qualified op name: ``aten.clone.default`` for an OpOverload, else its ``__name__``.

    ``getitem`` for ``operator.getitem``. Not ``copyhunt.text.op_name``, which shortens a name for display.
    """
    return str(target) if hasattr(target, "_schema") else getattr(target, "__name__", str(target))


def base_name(target: Any) -> str:
    """``clone`` for ``aten.clone.default``: the op name without namespace and overload."""
    name = qualified_name(target)
    parts = name.split(".")
    return parts[1] if len(parts) >= 3 else parts[-1]


def is_compute(node: Any) -> bool:
    """True for a call node that computes values: not a copy, not a view, not an input or output."""
    if getattr(node, "op", None) != "call_function":
        return False
    if qualified_name(node.target) in COPY_TARGETS:
        return False
    if getattr(node.target, "is_view", False):
        return False
    return base_name(node.target).rstrip("_") not in _VIEW_NAMES


# --- sizes that may be symbolic -----------------------------------------------------------------


def expr_of(x: Any) -> Any:
    """An int, or the sympy expression of a SymInt; None when it is neither."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if hasattr(x, "free_symbols") and hasattr(x, "is_number"):  # a sympy expression (Inductor IR sizes)
        return int(x) if x.is_number else x
    node = getattr(x, "node", None)
    expr = getattr(node, "expr", None)
    if expr is None:
        return None
    return int(expr) if getattr(expr, "is_number", False) else expr


def _val(x: Any) -> Any:
    """The fake value of an FX argument (a node's ``meta['val']``; lists element-wise)."""
    if isinstance(x, (list, tuple)):
        return type(x)(_val(a) for a in x)
    meta = getattr(x, "meta", None)
    if meta is not None:
        return meta.get("val")
    return x


def _nbytes_expr(t: Any) -> Any:
    if not isinstance(t, torch.Tensor):
        return None
    numel = expr_of(t.numel())
    return None if numel is None else numel * t.element_size()


def _copy_bytes(node: Any) -> tuple[Any, bool]:
    """(bytes written, exact) for a copy node: copyhunt's eager rules (copy_ops) on the fake values."""
    out = node.meta.get("val")
    target = node.target
    args = _val(tuple(node.args))
    kwargs = {k: _val(v) for k, v in node.kwargs.items()}
    if qualified_name(target) in ("aten.copy_.default", "aten.copy.default"):
        # copy_ writes every element of its destination (a noop copy_ never reaches a graph).
        return _nbytes_expr(args[0] if qualified_name(target) == "aten.copy_.default" else out), True
    fn = COPY_OPS.get(target)
    if fn is not None:
        try:
            facts = fn(args, kwargs, out)
        except Exception:  # noqa: BLE001 - a data-dependent count (a bool mask) on fake values
            facts = None
        if facts is not None:
            nb = expr_of(facts.nbytes)
            if nb is not None:
                return nb, bool(facts.exact)
    nb = _nbytes_expr(out)
    return nb, nb is not None


# --- the description of one compiled graph -------------------------------------------------------


@dataclass(frozen=True)
class GraphCopy:
    """One copy node Inductor kept, as it runs once per execution of its graph."""

    node: str  # FX node name in the post-grad graph ("clone", "copy_")
    op: str  # the eager op for the same code (COPY_TARGETS), e.g. "aten._to_copy.default"
    graph_op: str  # the node's own op, e.g. "prims.convert_element_type.default"
    nbytes: Any  # int, or a sympy expression of the graph's size symbols
    exact: bool
    hint: int  # bytes at the sizes seen when compiling (used when a symbol cannot be bound)
    shape: tuple[int, ...]  # hinted
    dtype: str
    src_dtype: str | None
    kind: str
    src_device: str
    dst_device: str
    stack: tuple[Frame, ...]  # innermost first, from the node's stack trace
    how: str  # "kernel" (a copy pass of its own), "fused" (inside a computing kernel), "extern"
    kernels: tuple[str, ...]  # names of the kernels (or extern calls) that write it, where known
    fused_with: tuple[str, ...]  # compute nodes sharing its kernel (how == "fused")
    mutates_input: str | None  # graph input it writes in place (copy_ into an argument), else None
    src_is_input: bool  # every source is a graph input (nothing in the graph produced it)
    module: str | None = None  # nn.Module path inside the compiled code ("a.lin"), from nn_module_stack
    buffer: str | None = None  # Inductor's scheduler node of a copy Inductor added (op == ADDED_OP)
    origins: tuple[str, ...] = ()  # FX nodes of that scheduler node (to find its kernel by name)


@dataclass
class CompiledGraph:
    """The copies of one compiled graph, and how to size them at run time."""

    graph_id: int
    copies: list[GraphCopy]
    removed: list[str]  # copy nodes Inductor did not materialise (inlined or optimised away)
    bindings: list[tuple[int, int | None, Any]]  # (input index, dim or None for a SymInt, symbol)
    compute: set[str] = field(default_factory=set)  # names of the graph's computing nodes
    kernel_names_known: bool = False
    name: str = ""  # "graph 3": shown in tables and notes
    notes: list[str] = field(default_factory=list)

    def bytes_for(self, copy: GraphCopy, inputs: Sequence[Any]) -> tuple[int, bool]:
        """(bytes, exact) of ``copy`` for one execution on ``inputs`` (binds the size symbols)."""
        nb = copy.nbytes
        if isinstance(nb, int):
            return nb, copy.exact
        if nb is None:
            return copy.hint, False
        subs = {}
        for idx, dim, sym in self.bindings:
            if idx >= len(inputs):
                continue
            x = inputs[idx]
            try:
                subs[sym] = int(x) if dim is None else int(x.shape[dim])
            except (TypeError, ValueError, AttributeError, IndexError):
                continue
        try:
            value = nb.xreplace(subs)
            if value.free_symbols:
                return copy.hint, False
            return int(value), copy.exact
        except Exception:  # noqa: BLE001 - an expression we cannot evaluate: the compile-time size
            return copy.hint, False


def hint_of(expr: Any, size_hint: Any) -> int:
    if isinstance(expr, int):
        return expr
    if expr is None:
        return 0
    try:
        return int(size_hint(expr))
    except Exception:  # noqa: BLE001
        return 0


def bindings_of(nodes: Iterable[Any]) -> list[tuple[int, int | None, Any]]:
    """How to bind the graph's size symbols from its inputs: placeholder i, dim d (or a SymInt input)."""
    out: list[tuple[int, int | None, Any]] = []
    i = 0
    for n in nodes:
        if n.op != "placeholder":
            continue
        v = n.meta.get("val")
        if isinstance(v, torch.Tensor):
            for d, s in enumerate(v.shape):
                e = expr_of(s)
                if e is not None and not isinstance(e, int) and getattr(e, "is_Symbol", False):
                    out.append((i, d, e))
        else:
            e = expr_of(v)
            if e is not None and not isinstance(e, int) and getattr(e, "is_Symbol", False):
                out.append((i, None, e))
        i += 1
    return out


#: ``op`` of a copy Inductor added itself (no copy op in the FX graph asked for it): a pure load-store
#: kernel, e.g. the contiguous input an extern matmul requires.
ADDED_OP = "inductor.copy"


def eager_op(n: Any) -> str:
    """The op an eager trace records for the code of copy node ``n``.

    Inductor's decompositions change ops (``index_copy_`` runs as ``index_put_``); the node keeps the aten
    op it came from in ``meta["original_aten"]``, which wins when it is a copy op itself.
    """
    original = n.meta.get("original_aten")
    name = qualified_name(original) if original is not None else None
    if name in COPY_TARGETS:
        return COPY_TARGETS[name]
    if name is not None and original in COPY_OPS:
        return name
    return COPY_TARGETS[qualified_name(n.target)]


def graph_copy(n: Any, how: str, partners: list[str], placeholders: set[str], size_hint: Any) -> GraphCopy:
    out = n.meta.get("val")
    target_name = qualified_name(n.target)
    if target_name == "aten.copy_.default" and n.args:
        dst_val, src_args = _val(n.args[0]), n.args[1:2]
    else:
        dst_val, src_args = out, n.args[:1]
        if target_name in ("aten.cat.default", "aten.stack.default") and n.args:
            src_args = tuple(n.args[0])
    srcs = [a for a in src_args if hasattr(a, "meta")]
    src_vals = [_val(a) for a in srcs]
    src_val = next((v for v in src_vals if isinstance(v, torch.Tensor)), None)
    dst = dst_val if isinstance(dst_val, torch.Tensor) else out if isinstance(out, torch.Tensor) else None
    nb, exact = _copy_bytes(n)
    dst_dev = dst.device if dst is not None else torch.device("cpu")
    src_dev = src_val.device if src_val is not None else dst_dev
    mutated = None
    if target_name in ("aten.copy_.default", "aten.index_put_.default", "aten.index_copy_.default") and n.args:
        base = n.args[0]
        if getattr(base, "name", None) in placeholders:
            mutated = base.name
    shape: tuple[int, ...] = ()
    if dst is not None:
        shape = tuple(hint_of(expr_of(s), size_hint) for s in dst.shape)
    return GraphCopy(
        node=n.name,
        op=eager_op(n),
        graph_op=target_name,
        nbytes=nb,
        exact=exact,
        hint=hint_of(nb, size_hint),
        shape=shape,
        dtype=str(dst.dtype) if dst is not None else "",
        src_dtype=str(src_val.dtype) if src_val is not None and dst is not None and src_val.dtype != dst.dtype else None,
        kind=copy_kind(src_dev, dst_dev),
        src_device=str(src_dev),
        dst_device=str(dst_dev),
        stack=parse_stack_trace(n.meta.get("stack_trace")),
        how=how,
        kernels=(),
        fused_with=tuple(partners) if how == "fused" else (),
        mutates_input=mutated,
        src_is_input=bool(srcs) and all(getattr(a, "name", None) in placeholders for a in srcs),
        module=module_path(n.meta.get("nn_module_stack")),
    )


_ROOT_RE = re.compile(r"^[LG]\['(?P<name>[^']+)'\]\.?")
_MODULES_RE = re.compile(r"\._modules\['(?P<name>[^']+)'\]")


def module_path(stack: Any) -> str | None:
    """``"a.lin"`` from Dynamo's ``nn_module_stack`` (innermost entry ``("L['self'].a.lin", Linear)``).

    The compiled module itself (``L['self']``) is the module the compiled code was called from, which
    the run-time path already names; another root (``L['model']``) keeps its name.
    """
    if not isinstance(stack, dict) or not stack:
        return None
    entry = list(stack.values())[-1]
    path = entry[0] if isinstance(entry, tuple) and entry else None
    if not isinstance(path, str):
        return None
    root = _ROOT_RE.match(path)
    if root is not None:
        rest = path[root.end() :]
        path = rest if root["name"] == "self" else (f"{root['name']}.{rest}" if rest else root["name"])
    path = _MODULES_RE.sub(lambda m: "." + m["name"], path).strip(".")
    return path or None
