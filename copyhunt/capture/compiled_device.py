"""Device time of the copies inside compiled graphs: join Inductor's kernels to ``compiled`` records.

Each execution of a compiled graph runs inside a ``copyhunt#<seq>`` profiler range (``compiled.py``), so
a GPU event launched from it has that execution's seq. Within the execution, a Triton kernel is matched
by name to the copies Inductor's provenance map put in it; an extern call (an aten op Inductor calls) by
its aten op, among the ``cpu_op`` ranges around the launch. A kernel shared by several copies is
split between them by bytes (``Trace.timings``); a kernel that also computes (``how == "fused"``) is
not a copy pass, so its time is kept beside the record (``extra.compiled.kernel_us``) rather than
counted as copy time.

Kept apart from ``capture/device.py`` on purpose: it runs after that join and only adds timings to
records of origin ``compiled`` (and drops the ``device`` records the eager join made for copy kernels
that ran inside a compiled execution, which the compiled records already stand for).
"""

from __future__ import annotations

from dataclasses import replace

from copyhunt.kineto import KEvent, KinetoTrace
from copyhunt.records import CopyRecord, DeviceTiming, Trace

ORIGIN = "compiled"


def _aten(name: str) -> str:
    """``index_put_`` for ``aten::index_put_``, ``aten.index_put_.default`` or ``extern_kernels.index_put_``."""
    name = name.replace("::", ".")
    parts = [p for p in name.split(".") if p not in ("aten", "default", "extern_kernels", "torch", "ops")]
    return parts[0] if parts else name


def join_compiled(trace: Trace, kt: KinetoTrace) -> Trace:
    """``trace`` with device timings on its ``compiled`` copy records (see the module docstring)."""
    by_call: dict[int, list[int]] = {}
    for i, c in enumerate(trace.copies):
        if c.origin == ORIGIN:
            by_call.setdefault(int(c.extra["compiled"]["call"]), []).append(i)
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
            members = [i for i in idxs if _matches(copies[i], ev, around)]
            if not members:
                continue
            joined += 1
            total = sum(copies[i].bytes for i in members) or len(members)
            for i in members:
                if copies[i].extra["compiled"].get("how") == "fused":
                    # A computing kernel: the copy costs no pass of its own; keep the kernel's time for reference.
                    copies[i] = _with_kernel_time(copies[i], ev)
                else:
                    timings[i] = _add_event(timings.get(i), ev, (copies[i].bytes or 1) / total, copies[i].bytes)
    # Copy kernels or memcpy nodes (a CUDA-graph replay, mode="reduce-overhead") that the eager join
    # listed inside a compiled execution: the compiled records stand for them.
    keep = [i for i, c in enumerate(copies) if not (c.origin in ("device", "graph-replay") and c.seq in by_call)]
    extra = dict(trace.meta.extra)
    compiled = dict(extra.get("compiled", {}))
    compiled["device_events_joined"] = joined
    extra["compiled"] = compiled
    return replace(
        trace,
        copies=tuple(copies[i] for i in keep),
        # Timings are keyed by position: renumbered past the dropped records.
        timings={k: timings[i] for k, i in enumerate(keep) if i in timings},
        findings=None,
        meta=replace(trace.meta, extra=extra),
    )


def _matches(c: CopyRecord, ev: KEvent, around: tuple[str, ...]) -> bool:
    info = c.extra["compiled"]
    kernels = info.get("kernels") or []
    if info.get("how") == "extern":
        want = {_aten(k) for k in kernels} or {_aten(info.get("graph_op", ""))}
        return any(_aten(name) in want for name in around)
    return ev.name in kernels


def _with_kernel_time(c: CopyRecord, ev: KEvent) -> CopyRecord:
    info = dict(c.extra["compiled"])
    info["kernel_us"] = round(info.get("kernel_us", 0.0) + ev.dur, 3)
    return replace(c, extra={**c.extra, "compiled": info})


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
