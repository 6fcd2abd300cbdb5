"""What one Inductor-compiled graph copies: its copy nodes, the kernels that run them, and their bytes.

Built once per compile, at the end of Inductor's scheduling (``compiled.py`` installs the hook): the
final post-grad FX graph (after reinplacing, so ``index_put`` turned back into ``index_put_`` is seen as
Inductor runs it) plus the scheduler's nodes after fusion. A copy node is a *surviving* copy when
Inductor materialises its result in a buffer (a scheduler node whose origin is that node); a copy node
only inlined into its consumers (a ``clone`` read straight by a pointwise kernel) moves no data of its
own and is counted as removed. A surviving copy is *fused* when its kernel also computes something
(it costs no separate pass over memory); otherwise it is a copy kernel of its own, or an extern call
(an aten op Inductor falls back to). Kernel names come from Inductor's provenance map when it has one.

Everything here reads FX nodes and scheduler nodes by duck typing (names, ``origins``,
``origin_node``, ``meta``), keeps no tensor (fake values are read for sizes, then dropped) and judges
nothing. Sizes may be symbolic (a dynamic-shape recompile): they are kept as sympy expressions with
the rule to bind their symbols from the graph's inputs at run time (:meth:`CompiledGraph.bytes_for`).
"""

from __future__ import annotations

import json
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

#: Provenance names of calls Inductor makes to existing kernels instead of generating one.
_EXTERN_PREFIXES = ("extern_kernels.", "aten.", "torch.ops.", "aten::")

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


def op_name(target: Any) -> str:
    """``aten.clone.default`` for an OpOverload target, ``str(target)`` otherwise (``getitem``...)."""
    return str(target) if hasattr(target, "_schema") else getattr(target, "__name__", str(target))


def _base_name(target: Any) -> str:
    """``clone`` for ``aten.clone.default``: the op name without namespace and overload."""
    name = op_name(target)
    parts = name.split(".")
    return parts[1] if len(parts) >= 3 else parts[-1]


def is_compute(node: Any) -> bool:
    """True for a call node that computes values: not a copy, not a view, not an input or output."""
    if getattr(node, "op", None) != "call_function":
        return False
    if op_name(node.target) in COPY_TARGETS:
        return False
    if getattr(node.target, "is_view", False):
        return False
    return _base_name(node.target).rstrip("_") not in _VIEW_NAMES


# --- sizes that may be symbolic -----------------------------------------------------------------


def _expr(x: Any) -> Any:
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
    numel = _expr(t.numel())
    return None if numel is None else numel * t.element_size()


def _copy_bytes(node: Any) -> tuple[Any, bool]:
    """(bytes written, exact) for a copy node: copyhunt's eager rules (copy_ops) on the fake values."""
    out = node.meta.get("val")
    target = node.target
    args = _val(tuple(node.args))
    kwargs = {k: _val(v) for k, v in node.kwargs.items()}
    if op_name(target) in ("aten.copy_.default", "aten.copy.default"):
        # copy_ writes every element of its destination (a noop copy_ never reaches a graph).
        return _nbytes_expr(args[0] if op_name(target) == "aten.copy_.default" else out), True
    fn = COPY_OPS.get(target)
    if fn is not None:
        try:
            facts = fn(args, kwargs, out)
        except Exception:  # noqa: BLE001 - a data-dependent count (a bool mask) on fake values
            facts = None
        if facts is not None:
            nb = _expr(facts.nbytes)
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


def _hint(expr: Any, size_hint: Any) -> int:
    if isinstance(expr, int):
        return expr
    if expr is None:
        return 0
    try:
        return int(size_hint(expr))
    except Exception:  # noqa: BLE001
        return 0


def _bindings(nodes: Iterable[Any]) -> list[tuple[int, int | None, Any]]:
    """How to bind the graph's size symbols from its inputs: placeholder i, dim d (or a SymInt input)."""
    out: list[tuple[int, int | None, Any]] = []
    i = 0
    for n in nodes:
        if n.op != "placeholder":
            continue
        v = n.meta.get("val")
        if isinstance(v, torch.Tensor):
            for d, s in enumerate(v.shape):
                e = _expr(s)
                if e is not None and not isinstance(e, int) and getattr(e, "is_Symbol", False):
                    out.append((i, d, e))
        else:
            e = _expr(v)
            if e is not None and not isinstance(e, int) and getattr(e, "is_Symbol", False):
                out.append((i, None, e))
        i += 1
    return out


def _extern_op(ir: Any) -> str | None:
    """Base op name of an extern kernel's IR node (``index_put_``, ``bmm``), when it says."""
    op = getattr(ir, "op_overload", None)
    if op is not None:
        return _base_name(op)
    name = getattr(ir, "python_kernel_name", None)
    if isinstance(name, str) and name:
        parts = [p for p in name.split(".") if p not in ("default", "out")]
        return parts[-1] if parts else None
    return None


def _scheduler_groups(snodes: Sequence[Any]) -> tuple[dict[str, set[int]], list[tuple[str, set[str]]]]:
    """Which post-fusion scheduler node materialises which FX node, and each node's kind and origins.

    A sub-node materialises its ``origin_node`` (the FX node its buffer holds exactly). A generated
    kernel's sub-node without one (a mutation written into an input, a slice of a ``cat``)
    materialises all its origins; an extern call without one only the origins of its own op (its
    other origins are inputs it reads, e.g. the ``.float()`` feeding a ``bmm``).
    """
    materialised: dict[str, set[int]] = {}
    groups: list[tuple[str, set[str]]] = []
    for gi, top in enumerate(snodes):
        cls = type(top).__name__
        kind = "extern" if "Extern" in cls else "nop" if "Nop" in cls else "kernel"
        origins: set[str] = set()
        subs = top.get_nodes() if hasattr(top, "get_nodes") else [top]
        for sub in subs:
            ir = getattr(sub, "node", None)
            if ir is None:
                continue
            nodes = list(getattr(ir, "origins", ()))
            origins |= {o.name for o in nodes}
            on = getattr(ir, "origin_node", None)
            if on is not None:
                made = [on]
            elif kind == "extern":
                op = _extern_op(ir)
                made = [o for o in nodes if op is not None and _base_name(o.target) == op]
            else:
                made = nodes
            for o in made:
                materialised.setdefault(o.name, set()).add(gi)
        groups.append((kind, origins))
    return materialised, groups


def analyse_graph(graph_id: int, gm_graph: Any, snodes: Sequence[Any], size_hint: Any = None) -> CompiledGraph:
    """Describe the copies of a graph from its final FX graph and Inductor's fused scheduler nodes."""
    nodes = list(gm_graph.nodes)
    by_name = {n.name: n for n in nodes}
    materialised, groups = _scheduler_groups(snodes)
    placeholders = {n.name for n in nodes if n.op == "placeholder"}
    # Ops an extern call computes (a matmul, a convolution) appear in the origins of the buffers
    # Inductor prepares for them; they compute nothing in those kernels.
    extern_ops = {name for name, where in materialised.items() if any(groups[g][0] == "extern" for g in where)}
    compute = {n.name for n in nodes if is_compute(n)} - extern_ops
    copies: list[GraphCopy] = []
    removed: list[str] = []
    for n in nodes:
        if n.op != "call_function" or op_name(n.target) not in COPY_TARGETS:
            continue
        where = materialised.get(n.name, set())
        if not where:
            removed.append(n.name)
            continue
        # A cat's buffer is a no-op allocation; the copying is done by the kernels writing its slices.
        real = [groups[g] for g in sorted(where) if groups[g][0] != "nop"] or [
            g for g in groups if g[0] != "nop" and n.name in g[1]
        ]
        if not real:
            removed.append(n.name)
            continue
        extern = any(kind == "extern" for kind, _ in real)
        partners = sorted({o for _, origins in real for o in origins if o in compute})
        how = "extern" if extern else "fused" if partners else "kernel"
        copies.append(_graph_copy(n, how, partners, placeholders, size_hint))
    copies.extend(_added_copies(snodes, groups, by_name, compute, size_hint))
    return CompiledGraph(
        graph_id=graph_id,
        copies=copies,
        removed=removed,
        bindings=_bindings(nodes),
        compute=compute,
        name=f"graph {graph_id}",
    )


#: ``op`` of a copy Inductor added itself (no copy op in the FX graph asked for it): a pure load-store
#: kernel, e.g. the contiguous input an extern matmul requires.
ADDED_OP = "inductor.copy"


def _added_copies(
    snodes: Sequence[Any], groups: list[tuple[str, set[str]]], by_name: dict[str, Any], compute: set[str], size_hint: Any
) -> list[GraphCopy]:
    """Copies Inductor made on its own: scheduler nodes whose loop body only loads and stores
    (``LoopBody.is_memory_copy``) and that no FX copy node asked for. Attributed to the FX node whose
    value they copy (its stack trace)."""
    out: list[GraphCopy] = []
    for gi, top in enumerate(snodes):
        subs = top.get_nodes() if hasattr(top, "get_nodes") else [top]
        for sub in subs:
            ir = getattr(sub, "node", None)
            body = getattr(sub, "_body", None)
            if ir is None or body is None:
                continue
            try:
                if not body.is_memory_copy():
                    continue
            except Exception:  # noqa: BLE001 - an IR this version describes differently: not a known copy
                continue
            origins = [o for o in getattr(ir, "origins", ()) if getattr(o, "name", None) in by_name]
            if not origins or any(op_name(o.target) in COPY_TARGETS for o in origins):
                continue  # an FX copy node's own kernel: recorded from the graph
            order = {name: i for i, name in enumerate(by_name)}
            anchor = getattr(ir, "origin_node", None) or min(
                origins, key=lambda o: (not o.meta.get("stack_trace"), order.get(o.name, 0))
            )
            try:
                numel = _expr(ir.get_numel())
                dtype = ir.get_dtype()
                device = ir.get_device()
            except Exception:  # noqa: BLE001
                continue
            nb = None if numel is None else numel * dtype.itemsize
            # Fused when another piece of the same fused kernel computes something.
            partners = sorted({o.name for other in subs if other is not sub for o in _origins(other) if o.name in compute})
            how = "fused" if partners else "kernel"
            out.append(
                GraphCopy(
                    node=anchor.name,
                    op=ADDED_OP,
                    graph_op=ADDED_OP,
                    nbytes=nb,
                    exact=nb is not None,
                    hint=_hint(nb, size_hint),
                    shape=tuple(_hint(_expr(s), size_hint) for s in ir.get_size()),
                    dtype=str(dtype),
                    src_dtype=None,
                    kind="d2d",
                    src_device=str(device),
                    dst_device=str(device),
                    stack=parse_stack_trace(anchor.meta.get("stack_trace")),
                    how=how,
                    kernels=(),
                    fused_with=tuple(partners) if how == "fused" else (),
                    mutates_input=None,
                    src_is_input=False,
                    module=module_path(anchor.meta.get("nn_module_stack")),
                    buffer=sub.get_name(),
                    origins=tuple(sorted(o.name for o in origins)),
                )
            )
    return out


def _origins(snode: Any) -> list[Any]:
    ir = getattr(snode, "node", None)
    return list(getattr(ir, "origins", ())) if ir is not None else []


def _graph_copy(n: Any, how: str, partners: list[str], placeholders: set[str], size_hint: Any) -> GraphCopy:
    out = n.meta.get("val")
    target_name = op_name(n.target)
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
        shape = tuple(_hint(_expr(s), size_hint) for s in dst.shape)
    return GraphCopy(
        node=n.name,
        op=COPY_TARGETS[target_name],
        graph_op=target_name,
        nbytes=nb,
        exact=exact,
        hint=_hint(nb, size_hint),
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


def apply_provenance(graph: CompiledGraph, mapping_json: str | None) -> None:
    """Name the kernels of ``graph``'s copies from Inductor's provenance map (kernel -> FX nodes).

    The map's kernel grouping is what Inductor emitted, which can fuse further than the scheduler did
    (the C++ backend merges the loops of separate scheduler nodes into one function), so "fused" is
    decided again from it: fused when every kernel touching the copy also computes something (a node
    merely inlined into one kernel while materialised by a copy kernel of its own stays a "kernel").
    """
    if not mapping_json:
        return
    try:
        kernels = json.loads(mapping_json).get("cppCodeToPost") or {}
    except (ValueError, AttributeError):
        return
    if not isinstance(kernels, dict) or not kernels:
        return
    compute = graph.compute
    out: list[GraphCopy] = []
    for c in graph.copies:
        if c.origins:  # a copy Inductor added: the kernel made of exactly its scheduler node's origins
            touching = [(k.rsplit(":", 1)[0], nodes) for k, nodes in kernels.items() if isinstance(nodes, list) and set(c.origins) <= set(nodes)]
        else:
            touching = [(k.rsplit(":", 1)[0], nodes) for k, nodes in kernels.items() if isinstance(nodes, list) and c.node in nodes]
        if c.how == "extern":
            names = tuple(sorted({k for k, _ in touching if k.startswith(_EXTERN_PREFIXES)}))
            out.append(_replace(c, kernels=names))
            continue
        # An extern call that merely reads the copy's result does not make the copy fused.
        generated = [(k, nodes) for k, nodes in touching if not k.startswith(_EXTERN_PREFIXES)]
        if not generated:
            out.append(c)
            continue
        names = tuple(sorted({k for k, _ in generated}))
        if c.origins:  # a copy Inductor added: its kernel's node list names what it copies, not what it fuses
            out.append(_replace(c, kernels=names))
            continue
        with_compute = [[n for n in nodes if n in compute] for _, nodes in generated]
        how = "fused" if all(with_compute) else "kernel"
        partners = tuple(sorted({n for group in with_compute for n in group})) if how == "fused" else ()
        out.append(_replace(c, kernels=names, how=how, fused_with=partners))
    graph.copies = out
    graph.kernel_names_known = True


def _replace(c: GraphCopy, **changes: Any) -> GraphCopy:
    from dataclasses import replace

    return replace(c, **changes)
