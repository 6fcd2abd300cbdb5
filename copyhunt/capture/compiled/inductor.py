"""Which copies of a compiled graph survive, and how Inductor runs them: read from its scheduler nodes.

Called at the end of Inductor's scheduling (``hooks.py`` installs the hook) with the final post-grad
FX graph and the fused scheduler nodes, then, at the graph's first run, with Inductor's provenance map
(kernel name -> FX nodes). Duck-typed on Inductor's IR (``origins``, ``origin_node``, ``get_nodes``,
``LoopBody.is_memory_copy``), present in torch 2.11 and 2.13.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Sequence

from copyhunt.capture.compiled.graph import (
    ADDED_OP,
    COPY_TARGETS,
    CompiledGraph,
    GraphCopy,
    base_name,
    bindings_of,
    expr_of,
    graph_copy,
    hint_of,
    is_compute,
    module_path,
    parse_stack_trace,
    qualified_name,
)

#: Provenance names of calls Inductor makes to existing kernels instead of generating one.
_EXTERN_PREFIXES = ("extern_kernels.", "aten.", "torch.ops.", "aten::")

def _extern_op(ir: Any) -> str | None:
    """Base op name of an extern kernel's IR node (``index_put_``, ``bmm``), when it says."""
    op = getattr(ir, "op_overload", None)
    if op is not None:
        return base_name(op)
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
                made = [o for o in nodes if op is not None and base_name(o.target) == op]
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
        if n.op != "call_function" or qualified_name(n.target) not in COPY_TARGETS:
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
        if how == "fused" and _in_place_write_back(n, partners, placeholders):
            removed.append(n.name)
            continue
        copies.append(graph_copy(n, how, partners, placeholders, size_hint))
    copies.extend(_added_copies(snodes, groups, by_name, compute, size_hint))
    return CompiledGraph(
        graph_id=graph_id,
        copies=copies,
        removed=removed,
        bindings=bindings_of(nodes),
        compute=compute,
        name=f"graph {graph_id}",
    )


def _in_place_write_back(n: Any, partners: list[str], placeholders: set[str]) -> bool:
    """True for the ``copy_`` functionalization puts after an in-place op on a graph input
    (``counter.add_(1)`` becomes ``copy_(counter, add(counter, 1))``) when Inductor computes the value
    straight into the input: the user's in-place op, no copy (an eager trace records none either)."""
    if qualified_name(n.target) != "aten.copy_.default" or len(n.args) < 2:
        return False
    dst, src = n.args[0], n.args[1]
    return (
        getattr(dst, "name", None) in placeholders
        and getattr(src, "name", None) in partners
        and len(getattr(src, "users", ())) == 1
    )


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
            if not origins or any(qualified_name(o.target) in COPY_TARGETS for o in origins):
                continue  # an FX copy node's own kernel: recorded from the graph
            order = {name: i for i, name in enumerate(by_name)}
            anchor = getattr(ir, "origin_node", None) or min(
                origins, key=lambda o: (not o.meta.get("stack_trace"), order.get(o.name, 0))
            )
            try:
                numel = expr_of(ir.get_numel())
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
                    hint=hint_of(nb, size_hint),
                    shape=tuple(hint_of(expr_of(s), size_hint) for s in ir.get_size()),
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
    return replace(c, **changes)
