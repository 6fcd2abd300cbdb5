"""Compiled-graph capture: the copies that survive ``torch.compile`` (Inductor), per execution, at user lines.

While a hunt runs (``compiled="compiled"``, the default), compiled functions stay compiled: the dispatch
mode says ``ignore_compile_internals()`` so Dynamo compiles under it (with every mode switched off while
it compiles: fake-tensor ops never reach the mode) and turns the mode back on for the compiled code's
run. This module adds what the mode cannot see:

- at compile time (installed when Dynamo first asks the mode about compiling, so a program that never
  compiles loads no Inductor), a hook at the end of Inductor's scheduling (``config._post_fusion_custom_pass``,
  chained after any pass the user set) describes each graph's surviving copies (``graph.py``);
  Inductor's FX-graph and AOTAutograd caches are switched off for the hunt (a cache hit would skip the
  hook) and its provenance map is switched on (kernel names per FX node: comments in the generated
  code, no change to what it computes);
- at run time, ``CompiledFxGraph.__call__`` (the object every Inductor graph is called through) is
  wrapped for the hunt: each execution records two ops for the dispatch trace (its inputs read; the
  inputs it mutates written and its outputs allocated: later eager copies are judged knowing that) and,
  between them, one copy record per surviving copy, so a graph run 10 times gives 10 records per copy. The dispatch
  mode is paused inside (the ops it would see there are Inductor's own calls, already described by the
  graph, and its autotuner's scratch clones); with a device capture, the execution is wrapped in the
  same ``copyhunt#<seq>`` range as every eager op, which ``device_join.py`` joins on.

``compiled="eager"`` keeps the old behaviour (Dynamo skips compiled frames under the mode, the program
runs op by op); ``eager.py`` names the functions that ran that way.
Nothing here changes what a compiled program computes; tests compare outputs bit for bit.
"""

from __future__ import annotations

import sys
import threading
from _thread import get_ident
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from copyhunt.capture.compiled.graph import ADDED_OP, CompiledGraph, user_function
from copyhunt.capture.compiled.inductor import analyse_graph, apply_provenance
from copyhunt.capture.op_roles import READ, RW, Plan
from copyhunt.capture.regions import _state as _region_state
from copyhunt.notes import note
from copyhunt.records import CompiledCopy, CompiledGraphRun, CompiledHunt, CopyRecord, Frame

Attribute = Callable[[Sequence[Frame]], "tuple[Frame | None, tuple[Frame, ...]]"]

#: Origin of the copy records made here (``records.ORIGINS``).
ORIGIN = "compiled"

_lock = threading.Lock()
_active: "CompiledCapture | None" = None


@dataclass
class _Execution:
    """One run of a compiled graph during the hunt (raw; records are built at the end)."""

    seq: int  # the execution's op seq; its copies take seq + 1 ... seq + n
    graph_id: int | None
    nbytes: tuple[tuple[int, bool], ...]  # per graph copy: (bytes, exact) for these inputs
    module: str | None
    region: str | None
    thread: int
    caller: Frame | None  # the user's line that ran the compiled code (fallback site)


class CompiledCapture:
    """Records compiled graphs and their executions for one hunt (see the module docstring)."""

    def __init__(self, capture: Any) -> None:
        self.capture = capture  # the hunt's DispatchCapture: seq numbers, op records, the mode to pause
        self.graphs: dict[int, CompiledGraph] = {}
        self.executions: list[_Execution] = []
        self.unknown: dict[str, int] = {}  # graphs compiled before the hunt: executions by cache key
        self.notes: list[str] = []
        self._restore: list[Callable[[], None]] = []
        self._provenance_done: set[int] = set()
        self._installed = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Install the hooks now if torch.compile was used already, else when Dynamo first asks the mode.

        Importing Dynamo and Inductor costs seconds; a program that never compiles must not pay it. Dynamo
        asks every active mode ``ignore_compile_internals()`` before it compiles a frame: the mode then
        calls :func:`install_if_compiling` (``dispatch.set_compile_hook``), before the compile begins.
        """
        global _active
        with _lock:
            _active = self
        from copyhunt.capture import dispatch

        dispatch.set_compile_hook(install_if_compiling)
        self._restore.append(lambda: dispatch.set_compile_hook(None))
        self._installed = False
        try:
            install_if_compiling()
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        """Undo every change, in reverse order."""
        global _active
        with _lock:
            if _active is self:
                _active = None
            restore, self._restore = self._restore, []
        while restore:
            restore.pop()()

    def _install(self) -> None:
        self._defer_notes()
        try:
            import torch._inductor.config as inductor_config
            from torch._inductor.output_code import CompiledFxGraph
        except Exception as exc:  # noqa: BLE001 - no Inductor in this torch: compiled code is not described
            self.notes.append(f"torch.compile graphs are not described: Inductor is not importable ({type(exc).__name__})")
            return
        if not hasattr(inductor_config, "_post_fusion_custom_pass"):
            self.notes.append(
                "this torch has no Inductor scheduler hook (config._post_fusion_custom_pass): copies inside "
                "compiled graphs are not recorded (compiled graphs still run compiled)"
            )
        else:
            self._set(inductor_config, "_post_fusion_custom_pass", _SchedulerHook(inductor_config._post_fusion_custom_pass))
            # A cache hit skips scheduling, hence the hook: compile afresh while the hunt runs.
            for key in ("fx_graph_cache", "fx_graph_remote_cache"):
                if hasattr(inductor_config, key):
                    self._set(inductor_config, key, False)
            trace_config = getattr(inductor_config, "trace", None)
            if trace_config is not None and hasattr(trace_config, "provenance_tracking_level"):
                if not trace_config.provenance_tracking_level:
                    self._set(trace_config, "provenance_tracking_level", 1)
            else:
                self.notes.append("this torch has no Inductor provenance map: kernel names of compiled copies are unknown")
            try:
                import torch._functorch.config as functorch_config

                if hasattr(functorch_config, "enable_autograd_cache"):
                    self._set(functorch_config, "enable_autograd_cache", False)
            except Exception:  # noqa: BLE001 - older torch: no AOTAutograd cache to switch off
                pass
        original = CompiledFxGraph.__call__

        def __call__(graph_self: Any, inputs: Sequence[Any]) -> Any:
            cc = _active
            if cc is None:
                return original(graph_self, inputs)
            return cc._run(graph_self, inputs, original)

        __call__.__wrapped__ = original  # type: ignore[attr-defined]
        CompiledFxGraph.__call__ = __call__  # type: ignore[method-assign]

        def restore() -> None:
            CompiledFxGraph.__call__ = original  # type: ignore[method-assign]

        self._restore.append(restore)

    def _defer_notes(self) -> None:
        """Let compiled code call ``copyhunt.note`` after each execution instead of tracing into it.

        Traced, ``note`` appends to the hunt's list, a global Dynamo guards on (its length): every call
        would recompile, until Dynamo's recompile limit runs the function eagerly. Registered as a
        reorderable logging function for the hunt, the call runs after the graph, once per execution.
        """
        try:
            import torch._dynamo.config as dynamo_config
        except Exception:  # noqa: BLE001 - no Dynamo: nothing compiles
            return
        deferred = getattr(dynamo_config, "reorderable_logging_functions", None)
        if not isinstance(deferred, set) or note in deferred:
            return
        deferred.add(note)
        self._restore.append(lambda: deferred.discard(note))

    def _set(self, config: Any, key: str, value: Any) -> None:
        # Plain attribute sets, not config.patch(): that keeps its prior values in a context variable,
        # and the hooks may be installed from the thread Dynamo compiles in, then removed from the hunt's.
        old = getattr(config, key)
        setattr(config, key, value)
        self._restore.append(lambda: setattr(config, key, old))

    # --- compile time ---------------------------------------------------------------------

    def _observe(self, nodes: Sequence[Any]) -> None:
        """Called by the scheduler hook with Inductor's fused nodes of the graph being compiled."""
        from torch._inductor.virtualized import V

        g = V.graph
        gid = getattr(g, "graph_id", None)
        if gid is None:
            return
        size_hint = getattr(getattr(g, "sizevars", None), "size_hint", None)
        graph = analyse_graph(gid, g.graph, nodes, size_hint)
        with _lock:
            self.graphs[gid] = graph

    # --- run time -------------------------------------------------------------------------

    def _run(self, graph_self: Any, inputs: Sequence[Any], original: Callable[..., Any]) -> Any:
        cap = self.capture
        fx_kwargs = getattr(graph_self, "fx_kwargs", None) or {}
        gid = fx_kwargs.get("graph_id") if isinstance(fx_kwargs, dict) else None
        graph = self.graphs.get(gid) if gid is not None else None
        if graph is None:
            key = str(getattr(graph_self, "cache_key", None) or gid)
            self.unknown[key] = self.unknown.get(key, 0) + 1
        elif gid not in self._provenance_done:
            self._provenance_done.add(gid)
            apply_provenance(graph, getattr(graph_self, "inductor_provenance_mapping_str", None))
        n = len(graph.copies) if graph is not None else 0
        seq = next(cap._seq)
        for _ in range(n):
            next(cap._seq)
        # Sizes first: the compiled code empties its (boxed) input list as it frees inputs.
        nbytes = tuple(graph.bytes_for(c, inputs) for c in graph.copies) if graph is not None else ()
        name = f"compiled {graph.name if graph is not None else 'graph'}"
        frame = sys._getframe(1)
        # Two op records: the inputs read before the graph runs, its outputs and mutated inputs written
        # after (its copies take the seqs in between). Taken apart so that no input is held while the
        # compiled code runs (Inductor frees inputs it no longer needs early).
        self._record(seq, name, (0, "inputs", READ), list(inputs), None, frame)
        mutated_idx = tuple(i for i in getattr(graph_self, "mutated_input_idxs", ()) if i < len(inputs))
        mutated = [inputs[i] for i in mutated_idx]
        mode = _pause(cap)
        try:
            if cap.op_range is not None:
                with cap.op_range(seq, name):
                    out = original(graph_self, inputs)
            else:
                out = original(graph_self, inputs)
        finally:
            _resume(mode, cap)
        self._record(next(cap._seq), f"{name} (outputs)", (0, "mutated", RW), mutated, out, frame)
        del mutated
        site = cap.recorder.sites.live(frame)
        caller = None if site is None else Frame(site.f_code.co_filename, site.f_lineno, user_function(site.f_code.co_name))
        with _lock:
            self.executions.append(
                _Execution(
                    seq=seq,
                    graph_id=gid,
                    nbytes=nbytes,
                    module=cap.recorder.module_path(),
                    region=_region_state.path,
                    thread=get_ident(),
                    caller=caller,
                )
            )
        return out

    def _record(self, seq: int, name: str, role: tuple[int, str, int], tensors: list[Any], out: Any, frame: Any) -> None:
        """One op record of a compiled execution: ``tensors`` in the given role, ``out`` as outputs."""
        cap = self.capture
        if not cap.record_ops:
            return
        plan = Plan(name, (role,), out is None, False, None, None)
        try:
            cap.record(seq, plan, (tensors,), {}, out if out is not None else (), frame)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never break the program
            cap.recorder.internal_error(name, exc)

    # --- records --------------------------------------------------------------------------

    def build(self, attribute: Attribute) -> tuple[list[CopyRecord], list[str], CompiledHunt]:
        """Copy records (one per surviving copy per execution), notes, and ``meta.compiled``."""
        records: list[CopyRecord] = []
        attributed: dict[tuple[int, str], tuple[Frame | None, tuple[Frame, ...]]] = {}
        runs: dict[int, int] = {}
        for ex in self.executions:
            graph = self.graphs.get(ex.graph_id) if ex.graph_id is not None else None
            if graph is None:
                continue
            k = runs.get(graph.graph_id, 0)
            runs[graph.graph_id] = k + 1
            for i, c in enumerate(graph.copies):
                key = (graph.graph_id, c.node)
                if key not in attributed:
                    attributed[key] = attribute(c.stack) if c.stack else (None, ())
                site, stack = attributed[key]
                if site is None:
                    site, stack = ex.caller, ((ex.caller,) if ex.caller is not None else ())
                nb, exact = ex.nbytes[i]
                facts = CompiledCopy(
                    graph=graph.graph_id,
                    node=c.node,
                    graph_op=c.graph_op,
                    how=c.how,
                    call=ex.seq,
                    execution=k,
                    kernels=c.kernels,
                    fused_with=c.fused_with,
                    mutates_input=c.mutates_input,
                    src_is_input=c.src_is_input,
                )
                records.append(
                    CopyRecord(
                        seq=ex.seq + 1 + i,
                        op=c.op,
                        kind=c.kind,
                        bytes=nb,
                        noop=False,
                        src_device=c.src_device,
                        dst_device=c.dst_device,
                        shape=c.shape,
                        dtype=c.dtype,
                        site=site,
                        module=_join_module(ex.module, c.module),
                        region=ex.region,
                        src_dtype=c.src_dtype,
                        stack=stack,
                        thread=ex.thread,
                        bytes_exact=exact,
                        origin=ORIGIN,
                        compiled=facts,
                    )
                )
        return records, self._notes(runs), self._summary(runs)

    def _notes(self, runs: dict[int, int]) -> list[str]:
        notes = list(self.notes)
        ran = [g for gid, g in sorted(self.graphs.items()) if gid in runs]
        if ran:
            kept = sum(len(g.copies) for g in ran)
            fused = sum(1 for g in ran for c in g.copies if c.how == "fused")
            added = sum(1 for g in ran for c in g.copies if c.op == ADDED_OP)
            removed = sum(len(g.removed) for g in ran)
            execs = sum(runs.values())
            notes.append(
                f"torch.compile: {len(ran)} compiled graph(s) ran {execs} time(s) compiled; per execution they keep "
                f"{kept} copy(ies) ({fused} fused into computing kernels: no separate pass"
                + (f"; {added} added by Inductor itself, op {ADDED_OP}" if added else "")
                + f") and Inductor removed {removed} copy op(s) of the traced code "
                "(origin 'compiled': one record per copy per execution)"
            )
            if any(g.copies and not g.kernel_names_known for g in ran):
                notes.append("torch.compile: Inductor gave no provenance map for some graphs: their kernel names are unknown")
        if self.unknown:
            n = sum(self.unknown.values())
            notes.append(
                f"torch.compile: {len(self.unknown)} graph(s) compiled before the hunt started ran {n} time(s): their copies "
                "are not known (start the hunt before the first call of the compiled code to see them)"
            )
        return notes

    def _summary(self, runs: dict[int, int]) -> CompiledHunt:
        return CompiledHunt(
            mode="compiled",
            graphs=tuple(
                CompiledGraphRun(
                    graph=gid,
                    executions=runs.get(gid, 0),
                    copies=tuple(c.node for c in g.copies),
                    removed=tuple(g.removed),
                    kernel_names=g.kernel_names_known,
                )
                for gid, g in sorted(self.graphs.items())
            ),
            before_hunt_executions=sum(self.unknown.values()),
        )


def _join_module(outer: str | None, inner: str | None) -> str | None:
    """The module path of a compiled copy: where the compiled code was called, then inside it."""
    if not inner:
        return outer
    return f"{outer}.{inner}" if outer else inner


def install_if_compiling() -> None:
    """Install the running hunt's compiled-graph hooks once Dynamo is loaded (cheap when done or not yet)."""
    cc = _active
    if cc is None or cc._installed or "torch._dynamo" not in sys.modules:
        return
    with _lock:
        if cc._installed or _active is not cc:
            return
        cc._installed = True
        cc._install()


class _SchedulerHook:
    """Inductor's post-fusion scheduler pass for the hunt: runs the user's pass, then observes.

    A plain callable (not a ``CustomSchedulerPass``): Inductor then bypasses its FX-graph cache for
    the compile, which the hunt wants anyway (a cache hit would skip this hook).
    """

    def __init__(self, user_pass: Any) -> None:
        self.user_pass = user_pass

    def __call__(self, nodes: list[Any]) -> list[Any]:
        if self.user_pass is not None:
            nodes = self.user_pass(nodes)
        cc = _active
        if cc is not None:
            try:
                cc._observe(nodes)
            except Exception as exc:  # noqa: BLE001 - describing a graph must never break its compile
                cc.notes.append(f"copyhunt could not describe a compiled graph: {type(exc).__name__}: {exc}")
        return nodes


def _pause(cap: Any) -> Any:
    """Pause this thread's hunt mode for a compiled call; return it (None when it is not on the stack).

    Searched in the whole mode stack: AOTAutograd pushes a mode of its own above ours on a graph's
    first call (torch 2.13 checks custom ops' aliasing there).
    """
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    for mode in _get_current_dispatch_mode_stack():
        if getattr(mode, "cap", None) is cap:
            mode.cap = None
            return mode
    return None


def _resume(mode: Any, cap: Any) -> None:
    if mode is not None and cap.active:
        mode.cap = cap
