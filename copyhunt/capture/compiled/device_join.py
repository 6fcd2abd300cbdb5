"""Device time of the copies inside compiled graphs: join Inductor's kernels to ``compiled`` records.

Each execution of a compiled graph runs inside a ``copyhunt#<seq>`` profiler range (``hooks.py``), so
a GPU event launched from it has that execution's seq. Within the execution, a Triton kernel is matched
by name to the copies Inductor's provenance map put in it; an extern call (an aten op Inductor calls) by
its aten op, among the ``cpu_op`` ranges around the launch. A kernel shared by several copies is
split between them by bytes (``Trace.timings``); a kernel that also computes (``how == "fused"``) is
not a copy pass, so its time is kept in the record's compiled facts (``CompiledCopy.kernel_us``)
rather than counted as copy time.

Kept apart from ``capture/device.py`` on purpose: it runs after that join and only adds timings to
records of origin ``compiled`` (and drops the ``device`` records the eager join made for copy kernels
that ran inside a compiled execution, which the compiled records already stand for).
"""

from __future__ import annotations

from dataclasses import replace

from copyhunt.kineto import KEvent, KinetoTrace
from copyhunt.records import CompiledCopy, CompiledHunt, DeviceTiming, Trace

ORIGIN = "compiled"


def _aten(name: str) -> str:
    """``index_put_`` for ``aten::index_put_``, ``aten.index_put_.default`` or ``extern_kernels.index_put_``."""
    name = name.replace("::", ".")
    parts = [p for p in name.split(".") if p not in ("aten", "default", "extern_kernels", "torch", "ops")]
    return parts[0] if parts else name


def join_compiled(trace: Trace, kt: KinetoTrace) -> Trace:
    """``trace`` with device timings on its ``compiled`` copy records (see the module docstring)."""
    # Compiled facts by copy position, and the positions of each execution's copies.
    facts = {i: c.compiled for i, c in enumerate(trace.copies) if c.origin == ORIGIN and c.compiled is not None}
    by_call: dict[int, list[int]] = {}
    for i, info in facts.items():
        by_call.setdefault(info.call, []).append(i)
    if not by_call:
        return trace
    events: dict[int, list[tuple[KEvent, tuple[str, ...]]]] = {}
    for ev in kt.gpu:
        src = kt.launcher(ev)
        if src is None:
            continue
        seq = kt.bridge_seq_at(src.tid, src.ts)
        if seq is None or seq not in by_call:
            continue
        # Every op around the launch: an extern index_put_ launches from inside its _index_put_impl_.
        around = tuple(e.name for e in kt.cpu_ops_at(src.tid, src.ts))
        events.setdefault(seq, []).append((ev, around))

    copies = list(trace.copies)
    timings = dict(trace.timings)
    joined = 0
    for seq, idxs in by_call.items():
        for ev, around in events.get(seq, []):
            members = [i for i in idxs if _matches(facts[i], ev, around)]
            if not members:
                continue
            joined += 1
            total = sum(copies[i].bytes for i in members) or len(members)
            for i in members:
                if facts[i].how == "fused":
                    # A computing kernel: the copy costs no pass of its own; keep the kernel's time for reference.
                    facts[i] = replace(facts[i], kernel_us=round((facts[i].kernel_us or 0.0) + ev.dur, 3))
                    copies[i] = replace(copies[i], compiled=facts[i])
                else:
                    timings[i] = _add_event(timings.get(i), ev, (copies[i].bytes or 1) / total, copies[i].bytes)
    # Copy kernels or memcpy nodes (a CUDA-graph replay, mode="reduce-overhead") that the eager join
    # listed inside a compiled execution: the compiled records stand for them.
    keep = [i for i, c in enumerate(copies) if not (c.origin in ("device", "graph-replay") and c.seq in by_call)]
    summary = trace.meta.compiled or CompiledHunt(mode="compiled")
    return replace(
        trace,
        copies=tuple(copies[i] for i in keep),
        # Timings are keyed by position: renumbered past the dropped records.
        timings={k: timings[i] for k, i in enumerate(keep) if i in timings},
        findings=None,
        meta=replace(trace.meta, compiled=replace(summary, device_events_joined=joined)),
    )


def _matches(info: CompiledCopy, ev: KEvent, around: tuple[str, ...]) -> bool:
    if info.how == "extern":
        want = {_aten(k) for k in info.kernels} or {_aten(info.graph_op)}
        return any(_aten(name) in want for name in around)
    return ev.name in info.kernels


def _add_event(t: DeviceTiming | None, ev: KEvent, share: float, nbytes: int) -> DeviceTiming:
    """The copy's timing with ``share`` of kernel ``ev`` added (the first kernel names it)."""
    time_us = round(ev.dur * share, 3) + (t.time_us if t is not None else 0.0)
    name = ev.name if t is None else (t.name if ev.name in t.name else f"{t.name} (+1)")
    return DeviceTiming(
        name=name,
        time_us=round(time_us, 3),
        bytes=nbytes,
        stream=ev.stream if t is None else t.stream,
        start_us=ev.ts if t is None else t.start_us,
    )
