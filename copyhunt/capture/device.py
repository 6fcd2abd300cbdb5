"""Device-level capture: run the traced block under torch.profiler (Kineto) and join GPU copies to records.

``DeviceCapture`` is the context manager ``copyhunt.hunt(device_trace=True)`` wraps around the block;
``DeviceCapture.join(trace)`` returns the trace with:

- ``Trace.timings`` (event name, device time, bytes, stream, start) for every dispatch copy that
  made GPU work;
- ``TraceMeta.gpu_time_us``: the summed duration of every GPU event in the region (the denominator
  of the "GPU share" column);
- records of origin ``"device"``: GPU copies (memcpys, copy kernels) that no dispatch copy explains
  (made inside the C++ of another op, or by a library), attributed to the dispatched op that launched
  them (its op name, site, module and region; when the hunt kept no record of that op, or the launch
  was outside every op it saw, the innermost ``cpu_op``'s name, else the kernel's, and no site; a
  launch inside torch.compile's compile phases gets the line that called the compiled function,
  see ``_CompileTime``);
- records of origin ``"graph-replay"``: copies executed by CUDA-graph replays, one per replay,
  attributed to the capture-time record (see ``kineto/graphs.py``); a captured copy that was
  replayed is represented by its replays (the capture itself moved no data).

The bridge between a dispatch record (``seq``) and Kineto's events: ``copyhunt.hunt`` hands
``DeviceCapture.op_range`` to the dispatch capture, and from then until the profiler stops the
dispatch mode runs EVERY op that takes a sequence number inside a ``copyhunt#<seq>`` range
(``bridge_range``): copies and all other ops alike, in copies-only hunts (``record_ops=False``) too.
Only profiler bookkeeping and composite ops take no number and no range (the ops a composite's kernel
calls get their own); ops a kernel calls internally run inside their caller's range, so ranges never
nest. The range is torch's C++ ``_RecordFunctionFast`` (about 2 us per op, against 13 us for the Python
``record_function``, the fallback on a torch without it). A GPU event belongs to the innermost such range
enclosing the runtime call (else the ``cpu_op``) that launched it, on the same thread: exact, nothing
matched by order. No ``with_stack``: the dispatch records already carry stacks.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, ContextManager, Iterator

from copyhunt import kineto
from copyhunt.kineto import KEvent, KinetoTrace, copy_kind, short_kernel
from copyhunt.kineto.graphs import account_replays
from copyhunt.errors import NoDeviceError
from copyhunt.records import CopyRecord, DeviceTiming, OpRecord, Trace

_ACTIVE_LOCK = threading.Lock()
_ACTIVE: "DeviceCapture | None" = None
_SESSIONS = 0  # profiler sessions started by device captures in this process

#: Kernels launched at the start of every session beyond those of earlier sessions (the user's own
#: torch.profiler sessions, which copyhunt cannot count); see ``_absorb_session_start``.
_WARMUP_MARGIN = 8
_WARMUP_MAX = 1024


def bridge_range(seq: int) -> ContextManager[Any]:
    """The ``copyhunt#<seq>`` profiler range the dispatch mode opens around op ``seq``."""
    return _fast_range(f"{kineto.BRIDGE_PREFIX}{seq}")


def _fast_range(name: str) -> ContextManager[Any]:
    import torch

    fast = getattr(torch._C._profiler, "_RecordFunctionFast", None)
    if fast is not None:
        return fast(name)  # type: ignore[no-any-return]
    return torch.profiler.record_function(name)  # older torch: the Python range (slower)


def _bridge_hook() -> Any:
    """``op_range`` without the per-op lookups of ``bridge_range`` (None on a torch without the fast range)."""
    try:
        import torch

        fast = torch._C._profiler._RecordFunctionFast
    except (ImportError, AttributeError):
        return None
    prefix = kineto.BRIDGE_PREFIX
    return lambda seq, op: fast(f"{prefix}{seq}")


def gpu_available() -> bool:
    """True when torch sees a CUDA or ROCm GPU (ROCm builds answer through torch.cuda too)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver install must read as "no GPU", not crash the CLI
        return False


def _absorb_session_start(n: int) -> int:
    """Launch ``n`` tiny non-copy kernels and wait for them, right after the profiler started; return ``n``.

    Every torch.profiler session in a process re-registers CUPTI's timestamp callback, and from the
    second session on CUPTI hands back the first records of a session with timestamps outside the
    session (one more record per earlier session: pytorch/pytorch#192021), which Kineto drops as
    "outside the profiling window". A hunt that was not the process's first session (a test suite, a
    program profiled twice) then lost its first GPU copies: ``test_eager_copies_get_device_events_and_
    gpu_time`` failed in a full GPU run after the torch.compile tests' session and passed alone. These
    kernels run before the dispatch mode starts, so they take no ``copyhunt#<seq>`` range, are no copy
    and join to nothing; they only add a few microseconds to ``meta.gpu_time_us``.
    """
    import torch

    n = max(0, min(n, _WARMUP_MAX))
    if n and torch.cuda.is_available():
        t = torch.zeros(1, device="cuda")
        for _ in range(n):
            t.add_(1)
        torch.cuda.synchronize()
    return n


@contextlib.contextmanager
def _quiet_profiler() -> Iterator[None]:
    """Silence torch's "Profiler clears events at the end of each cycle" warning.

    One capture is one profiler cycle, so the warning tells the user nothing, and torch 2.11 printed
    it on every GPU trace; torch raises it while the profiler starts (``prepare_trace``).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*clears events at the end of each cycle")
        yield


class DeviceCapture:
    """Context manager: Kineto capture of the block (CPU ops + GPU activity), then ``join`` a trace.

    ``trace_path``: where the Kineto Chrome trace is kept (``.json.gz`` is compressed, at a cost); by
    default a fresh plain ``.json`` file in the temp folder. Its path goes into ``meta.kineto_trace`` so reports can
    lay copies beside the original GPU timeline.
    """

    def __init__(self, *, trace_path: str | os.PathLike[str] | None = None, with_stack: bool = False) -> None:
        self.warmup_kernels = 0  # launched when the session started, before the block (see _absorb_session_start)
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.with_stack = with_stack
        self.kineto: KinetoTrace | None = None
        self._prof: Any = None
        self.timings_ms: dict[str, float] = {}  # post-processing cost: stop, export, parse, join
        # Called per op: the range class resolved once here, no method frames between the mode and torch's C++.
        self.op_range: Any = _bridge_hook() or self.op_range

    def __enter__(self) -> "DeviceCapture":
        global _ACTIVE, _SESSIONS
        if not gpu_available():
            raise NoDeviceError("device capture needs a CUDA or ROCm GPU and none is visible; run without --device-trace")
        import torch
        from torch.profiler import ProfilerActivity, profile

        with _ACTIVE_LOCK:
            if _ACTIVE is not None:
                raise NoDeviceError("a device capture is already running in this process; nest hunts without device_trace")
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # work queued before the region stays out of it
            with _quiet_profiler():
                self._prof = profile(
                    activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA] if torch.cuda.is_available() else [ProfilerActivity.CPU],
                    with_stack=self.with_stack,
                )
                self._prof.__enter__()
            _ACTIVE = self
            _SESSIONS += 1
            try:
                self.warmup_kernels = _absorb_session_start(_SESSIONS - 1 + _WARMUP_MARGIN)
            except Exception:
                self._prof.__exit__(None, None, None)
                _ACTIVE = None
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        global _ACTIVE
        import torch

        t0 = time.perf_counter()
        try:
            try:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()  # the GPU events of the region must be complete before stopping
            except Exception:
                if exc is None:
                    raise
            self._prof.__exit__(exc_type, exc, tb)
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE = None
        t1 = time.perf_counter()
        path = self.trace_path
        if path is None:
            # Plain JSON: torch gzips .gz exports in Python, which cost more than the capture itself.
            fd, name = tempfile.mkstemp(prefix="copyhunt-kineto-", suffix=".json")
            os.close(fd)
            path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._prof.export_chrome_trace(str(path))
        self.trace_path = path
        t2 = time.perf_counter()
        self.kineto = kineto.load(path)
        t3 = time.perf_counter()
        self.timings_ms = {"stop": (t1 - t0) * 1e3, "export": (t2 - t1) * 1e3, "parse": (t3 - t2) * 1e3}
        # Never swallow the block's exception: returning None lets it propagate.

    def op_range(self, seq: int, op: str) -> ContextManager[Any]:
        """The bridge hook ``copyhunt.hunt`` hands to the dispatch mode: a range around op ``seq``."""
        return bridge_range(seq)

    def join(self, trace: Trace) -> Trace:
        """``trace`` with device timings, GPU time, unexplained device copies and graph replays."""
        if self.kineto is None:
            raise RuntimeError("DeviceCapture.join() called before the capture finished")
        t0 = time.perf_counter()
        out = join_kineto(trace, self.kineto, kineto_trace=str(self.trace_path))
        self.timings_ms["join"] = (time.perf_counter() - t0) * 1e3
        stats = {**(out.meta.device_join or {}), "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
                 "warmup_kernels": self.warmup_kernels}
        return replace(out, meta=replace(out.meta, device_join=stats))


# --- the join (pure: Trace x KinetoTrace -> Trace) --------------------------------------------


def _timing(events: list[KEvent], fallback_bytes: int | None) -> DeviceTiming:
    """One DeviceTiming for the GPU events of one copy (a cat may run several kernels)."""
    first = min(events, key=lambda e: e.ts)
    name = short_kernel(first.name) + (f" (+{len(events) - 1})" if len(events) > 1 else "")
    memcpy_bytes = [e.nbytes for e in events if e.nbytes is not None]
    nbytes = sum(memcpy_bytes) if len(memcpy_bytes) == len(events) else fallback_bytes  # type: ignore[arg-type]
    return DeviceTiming(
        name=name,
        time_us=round(sum(e.dur for e in events), 3),
        bytes=nbytes,
        stream=first.stream,
        start_us=first.ts,
    )


def _device_of(kind: str, device: Any) -> tuple[str, str]:
    gpu = f"cuda:{device}" if device is not None else "cuda"
    return {"h2d": ("cpu", gpu), "d2h": (gpu, "cpu")}.get(kind, (gpu, gpu))


def _device_record(
    ev: KEvent, seq: int, op: OpRecord | None, launcher_op: str | None, *, origin: str, replay: int | None = None
) -> tuple[CopyRecord, DeviceTiming]:
    """A record (and its timing) for a GPU copy no dispatch copy explains, attributed to its launching op."""
    kind = copy_kind(ev) or "d2d"
    src, dst = _device_of(kind, ev.args.get("device"))
    record = CopyRecord(
        seq=seq,
        op=op.op if op is not None else (launcher_op or short_kernel(ev.name)),
        kind=kind,
        bytes=ev.nbytes or 0,
        noop=False,
        src_device=src,
        dst_device=dst,
        shape=(),
        dtype="",
        site=op.site if op is not None else None,
        module=op.module if op is not None else None,
        region=op.region if op is not None else None,
        captured_in_graph=origin == "graph-replay",
        thread=op.thread if op is not None else None,
        origin=origin,
        graph_replay=replay,
        bytes_exact=ev.nbytes is not None,
    )
    return record, _timing([ev], ev.nbytes)


#: Suffix of the profiler ranges torch.compile opens around its compile phases (``dynamo_timed`` in
#: ``torch._dynamo.utils``: "_compile.compile_inner (dynamo_timed)", "GraphLowering.run (dynamo_timed)", ...).
COMPILE_RANGE_SUFFIX = "(dynamo_timed)"
#: Name prefix of the op record of a compiled graph's execution (``capture/compiled/hooks.py``).
COMPILED_RUN_PREFIX = "compiled "


class _CompileTime:
    """Device copies torch.compile made while compiling, outside every op the hunt saw.

    Dynamo and Inductor compile with every dispatch mode switched off, and read tensor values there:
    Inductor's lowering turns a 0-d constant into a Python number (``value.item()`` under
    ``no_dispatch``, ``GraphLowering.get_attr``), its joint-graph constant folding reads the value of
    each uniform constant it folds (``.item()``). On a GPU each is a ``_local_scalar_dense`` d2h memcpy,
    once per compile, not per execution. Such a copy is recognised by the compile-phase range around
    its launch and attributed to the compiled graph that ran next on that thread (the compile's call),
    whose op record holds the user's line that called the compiled function.
    """

    def __init__(self, kt: KinetoTrace, ops: dict[int, OpRecord]) -> None:
        self.kt = kt
        self.runs: dict[Any, list[tuple[float, OpRecord]]] = {}  # per thread: compiled executions by start
        for e in kt.bridge:
            tail = e.name[len(kineto.BRIDGE_PREFIX) :]
            op = ops.get(int(tail)) if tail.isdigit() else None
            if op is not None and op.op.startswith(COMPILED_RUN_PREFIX) and not op.op.endswith("(outputs)"):
                self.runs.setdefault(e.tid, []).append((e.ts, op))
        for v in self.runs.values():
            v.sort(key=lambda x: x[0])

    def compile_end(self, src: KEvent) -> float | None:
        """End of the outermost compile-phase range around launch ``src`` on its thread; None outside compiles."""
        ranges = [e for e in (*self.kt.annotations_at(src.tid, src.ts), *self.kt.cpu_ops_at(src.tid, src.ts))
                  if e.name.endswith(COMPILE_RANGE_SUFFIX)]
        return max(e.end for e in ranges) if ranges else None

    def run_after(self, tid: Any, t: float) -> OpRecord | None:
        """The first compiled execution on thread ``tid`` that started at or after ``t``."""
        runs = self.runs.get(tid, [])
        i = bisect.bisect_left([ts for ts, _ in runs], t)
        return runs[i][1] if i < len(runs) else None


def _on_gpu(c: CopyRecord) -> bool:
    return not c.noop and (c.src_device.startswith("cuda") or c.dst_device.startswith("cuda"))


def join_kineto(trace: Trace, kt: KinetoTrace, *, kineto_trace: str | None = None) -> Trace:
    """Join a Kineto trace of the same region to the dispatch records of ``trace`` (see module doc)."""
    copies = {c.seq: c for c in trace.copies if c.origin == "dispatch"}
    ops = {o.seq: o for o in trace.ops}
    account = account_replays(kt)
    replayed_ids = {id(n.event) for n in account.nodes}

    compile_time = _CompileTime(kt, ops)

    def seq_of(ev: KEvent) -> int | None:
        """Bridge seq of the call that launched GPU event ``ev``."""
        src = kt.launcher(ev)
        return None if src is None else kt.bridge_seq_at(src.tid, src.ts)

    def op_name_at(launch: KEvent | None) -> str | None:
        """Innermost cpu_op name around a launch (asked only for a device record: the cpu_ops, most of
        the trace, are then parsed and indexed only when some copy needs them)."""
        if launch is None:
            return None
        inner = kt.cpu_ops_at(launch.tid, launch.ts)
        return inner[-1].name if inner else None

    eager: dict[int, list[KEvent]] = {}
    unexplained: list[tuple[CopyRecord, DeviceTiming]] = []
    opless = 0  # device copies inside an op that has no OpRecord (a hunt with record_ops=False)
    at_compile = 0  # device copies torch.compile made while compiling (see _CompileTime)
    at_compile_unplaced = 0  # ... of which no compiled execution followed (compile failed, or the hunt ended)
    for ev in kt.gpu:
        if id(ev) in replayed_ids:
            continue
        seq = seq_of(ev)
        if seq is not None and seq in copies:
            eager.setdefault(seq, []).append(ev)
        elif seq is None and copy_kind(ev) is not None and (src := kt.launcher(ev)) is not None and (
            end := compile_time.compile_end(src)
        ) is not None:
            # Made while compiling: the line that called the compiled function, not its execution's seq
            # (the compiled join drops device records inside an execution), and the launching op's name.
            at_compile += 1
            launcher_op = op_name_at(src)
            run = compile_time.run_after(src.tid, end)
            at_compile_unplaced += run is None
            record, timing = _device_record(ev, -1, run, launcher_op, origin="device")
            unexplained.append((replace(record, op=launcher_op or short_kernel(ev.name)), timing))
        elif copy_kind(ev) is not None:
            op = ops.get(seq) if seq is not None else None
            opless += seq is not None and op is None
            unexplained.append(_device_record(ev, seq if seq is not None else -1, op, op_name_at(kt.launcher(ev)), origin="device"))

    # Graph replays: all nodes a captured copy launched, per replay; copy nodes of other ops as device copies.
    replays: dict[tuple[int, int, int], list[KEvent]] = {}
    replay_extra: list[tuple[CopyRecord, DeviceTiming]] = []
    for node in account.nodes:
        seq = None if node.launch is None else kt.bridge_seq_at(node.launch.tid, node.launch.ts)
        if seq is not None and seq in copies:
            replays.setdefault((seq, node.graph if node.graph is not None else -1, node.replay), []).append(node.event)
        elif copy_kind(node.event) is not None:
            op = ops.get(seq) if seq is not None else None
            replay_extra.append(
                _device_record(node.event, seq if seq is not None else -1, op, op_name_at(node.launch), origin="graph-replay", replay=node.replay)
            )

    out: list[tuple[CopyRecord, DeviceTiming | None]] = []
    replaced = {seq for seq, _, _ in replays}
    unjoined = 0
    for i, c in enumerate(trace.copies):
        if c.origin == "dispatch" and c.seq in replaced:
            for (seq, graph, r), evs in sorted(replays.items()):
                if seq == c.seq:
                    replay = replace(c, origin="graph-replay", graph_replay=r, graph=graph, captured_in_graph=True)
                    out.append((replay, _timing(evs, c.bytes)))
            continue
        if c.origin == "dispatch" and c.seq in eager:
            out.append((c, _timing(eager[c.seq], c.bytes)))
            continue
        if c.origin == "dispatch" and _on_gpu(c) and not c.captured_in_graph:
            unjoined += 1
        out.append((c, trace.timings.get(i)))
    out.extend(sorted(replay_extra, key=lambda rt: rt[1].start_us or 0.0))
    out.extend(sorted(unexplained, key=lambda rt: rt[1].start_us or 0.0))

    notes = list(trace.meta.notes) + list(account.notes)
    if not kt.bridge and copies:
        notes.append("the device trace holds no copyhunt#<seq> ranges: GPU copies could not be joined to source lines")
    if unjoined:
        notes.append(f"{unjoined} GPU copy record(s) found no device event in the profiler trace (dropped events or a join miss)")
    if unexplained:
        notes.append(f"{len(unexplained)} device copy(ies) made inside library or C++ code (origin 'device'), attributed to the op that launched them")
    if opless:
        notes.append(f"{opless} device copy(ies) made inside ops the hunt did not record (record_ops=False): no source line")
    if at_compile:
        placed = at_compile - at_compile_unplaced
        notes.append(
            f"{at_compile} device copy(ies) made by torch.compile while it compiled (at compile time: Inductor reads "
            "the value of 0-d or folded constants with .item()), once per compile, not per execution: "
            + (f"{placed} attributed to the line that called the compiled function" if placed else "")
            + (", " if placed and at_compile_unplaced else "")
            + (f"{at_compile_unplaced} with no source line (no compiled execution followed the compile)"
               if at_compile_unplaced else "")
        )
    unbridged = sum(1 for r, _ in unexplained if r.seq == -1) - at_compile
    if unbridged:
        notes.append(
            f"{unbridged} device copy(ies) launched outside every op the hunt saw (a thread started before "
            "the hunt, or code that bypasses the dispatcher): no source line"
        )
    stats = {
        "bridge": "record_function copyhunt#<seq> around every op",
        "joined": len(eager),
        "graph_replays": len(replays),
        "unexplained": len(unexplained) + len(replay_extra),
        "no_site": sum(1 for r, _ in out if r.site is None),
        "gpu_events": len(kt.gpu),
        "rocm": kt.is_rocm,
    }
    meta = replace(
        trace.meta,
        gpu_time_us=round(kt.gpu_time_us(), 3),
        notes=tuple(dict.fromkeys(notes)),
        device_join=stats,
        kineto_trace=kineto_trace if kineto_trace is not None else trace.meta.kineto_trace,
    )
    # Positions changed (replays in, captures out): findings of the old positions would point astray.
    return replace(
        trace,
        meta=meta,
        copies=tuple(c for c, _ in out),
        timings={i: t for i, (_, t) in enumerate(out) if t is not None},
        findings=None,
    )
