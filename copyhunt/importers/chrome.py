"""Import a Chrome trace exported by any torch.profiler run (CUDA or ROCm) into copyhunt records.

Every GPU copy in the file (memcpy events and copy kernels, graph replays included) becomes one
``CopyRecord`` of origin ``"imported"``. Sites come from what the file holds:

- ``python_function`` events (``with_stack=True``): the innermost frame outside torch, copyhunt and
  the standard library (``attribution.KinetoSiteRule``), at the runtime call that launched the copy;
- ``user_annotation`` ranges (``record_function``, ``copyhunt.region``, vLLM labels): the region;
- the launching ``cpu_op`` (``aten::copy_``...): the op;
- with ``record_shapes=True``: shape, dtype and bytes of ``copy_`` kernels (memcpys carry bytes).

What the file lacks is said plainly in ``meta.notes``: no stacks, no byte counts for copy kernels,
no op/storage records (so no verdicts), no GPU activity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from copyhunt.attribution import KinetoSiteRule, attribute
from copyhunt import kineto
from copyhunt.kineto import KEvent, KinetoTrace, copy_kind, short_kernel
from copyhunt.kineto.graphs import account_replays
from copyhunt.records import CopyRecord, DeviceTiming, Frame, Trace, TraceMeta

#: Sites from Kineto's python_function stacks: the one chooser, with the rule for Kineto's paths.
_SITES = KinetoSiteRule()
_DTYPES = {
    "c10::BFloat16": ("torch.bfloat16", 2), "c10::Half": ("torch.float16", 2), "float": ("torch.float32", 4),
    "double": ("torch.float64", 8), "int": ("torch.int32", 4), "long int": ("torch.int64", 8),
    "short int": ("torch.int16", 2), "signed char": ("torch.int8", 1), "unsigned char": ("torch.uint8", 1),
    "bool": ("torch.bool", 1), "c10::Float8_e4m3fn": ("torch.float8_e4m3fn", 1),
    "c10::Float8_e4m3fnuz": ("torch.float8_e4m3fnuz", 1), "c10::Float8_e5m2": ("torch.float8_e5m2", 1),
}
_SKIP_REGIONS = ("ProfilerStep#", "## ", "PyTorch Profiler")


def _region(kt: KinetoTrace, tid: Any, t: float) -> str | None:
    names = [e.name for e in kt.annotations_at(tid, t) if not e.name.startswith(_SKIP_REGIONS)]
    return "/".join(names) or None


def _shape_bytes(op: KEvent | None) -> tuple[tuple[int, ...], str, int | None]:
    """Destination (shape, dtype, bytes) of a ``copy_`` from record_shapes args, when present."""
    if op is None or op.name != "aten::copy_":
        return (), "", None
    dims, types = op.args.get("Input Dims"), op.args.get("Input type")
    if not dims or not types or not isinstance(dims[0], list):
        return (), "", None
    dtype, size = _DTYPES.get(str(types[0]), (str(types[0]), 0))
    shape = tuple(int(d) for d in dims[0])
    return shape, dtype, (math.prod(shape) * size) if size else None


def _devices(kind: str, device: Any) -> tuple[str, str]:
    gpu = f"cuda:{device}" if device is not None else "cuda"
    return {"h2d": ("cpu", gpu), "d2h": (gpu, "cpu")}.get(kind, (gpu, gpu))


def import_kineto(kt: KinetoTrace, source: str = "trace") -> Trace:
    """Copy records for every GPU copy in a parsed Kineto trace."""
    account = account_replays(kt)
    replayed = {id(n.event): n for n in account.nodes}
    copies: list[CopyRecord] = []
    timings: dict[int, DeviceTiming] = {}
    no_bytes = 0
    no_site = 0
    for ev in kt.gpu:
        kind = copy_kind(ev)
        if kind is None:
            continue
        node = replayed.get(id(ev))
        launch = node.launch if node is not None else kt.launcher(ev)
        op_ev = None
        site, stack, region, tid = None, (), None, None
        if launch is not None:
            tid = launch.tid
            ops = kt.cpu_ops_at(launch.tid, launch.ts)
            op_ev = ops[-1] if ops else kt.op_by_ext.get(launch.external_id or -1)
            python = kt.python_stack_at(launch.tid, launch.ts)
            site, stack = attribute([Frame(f, line, fn) for f, line, fn in python], _SITES, 8)
            region = _region(kt, launch.tid, launch.ts)
        shape, dtype, rs_bytes = _shape_bytes(op_ev)
        nbytes = ev.nbytes if ev.nbytes is not None else rs_bytes
        if nbytes is None:
            no_bytes += 1
        if site is None:
            no_site += 1
        src, dst = _devices(kind, ev.args.get("device"))
        timings[len(copies)] = DeviceTiming(
            name=short_kernel(ev.name), time_us=round(ev.dur, 3), bytes=nbytes, stream=ev.stream, start_us=ev.ts
        )
        copies.append(
            CopyRecord(
                seq=len(copies),
                op=op_ev.name if op_ev is not None else ev.name[:80],
                kind=kind,
                bytes=nbytes or 0,
                noop=False,
                src_device=src,
                dst_device=dst,
                shape=shape,
                dtype=dtype,
                site=site,
                region=region,
                captured_in_graph=node is not None,
                stack=stack,
                thread=tid if isinstance(tid, int) else None,
                origin="imported",
                graph_replay=node.replay if node is not None else None,
                bytes_exact=nbytes is not None,
            )
        )
    notes = list(account.notes)
    if not kt.gpu:
        notes.append("the file holds no GPU activity (a CPU-only profile): there are no device copies to list")
    if kt.gpu and not kt.python:
        notes.append(
            "the file holds no Python stacks (profiled without with_stack=True): sites are unknown; ops and regions are shown"
        )
    elif no_site:
        notes.append(f"{no_site} copy(ies) have no user frame in the file's Python stacks")
    if kt.python:
        # Kineto's python_function events carry co_firstlineno (seen on torch 2.11), not the calling line.
        notes.append(
            "torch.profiler stacks name each function by its first line, not the line of the call: sites are function-level"
        )
    if no_bytes:
        notes.append(
            f"{no_bytes} copy kernel(s) have no byte count (the file lacks record_shapes input sizes): counted as 0 bytes"
        )
    if kt.is_rocm and not any(e.cat == "gpu_memcpy" for e in kt.gpu):
        notes.append("ROCm trace without memcpy events: Kineto dropped them on ROCm before its 2026 fix; copies may be undercounted")
    notes.append("imported from a profiler file: no op or storage records, so verdicts (eliminable or not) cannot be judged; run `copyhunt trace` for them")
    props = kt.meta.get("deviceProperties") or []
    device = "rocm" if kt.is_rocm else "cuda"
    if props and isinstance(props, list) and isinstance(props[0], dict) and props[0].get("name"):
        device = f"{device}:0 {props[0]['name']}"
    meta = TraceMeta(
        device=device if kt.gpu else "cpu",
        target=Path(source).name,
        gpu_time_us=round(kt.gpu_time_us(), 3) if kt.gpu else None,
        notes=tuple(notes),
        imported_from="chrome",
        kineto_trace=source,
    )
    return Trace(meta=meta, copies=tuple(copies), timings=timings)


def looks_like_chrome(doc: Any) -> bool:
    """True for a Chrome trace document (dict with a ``traceEvents`` list)."""
    return isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list)


def import_chrome(path: str | Path, doc: Any | None = None) -> Trace:
    """Read a Chrome trace file (``.json`` or ``.json.gz``) into a copyhunt trace."""
    if doc is None:
        doc = kineto.read_json(path)
    return import_kineto(kineto.parse(doc, source=str(path)), source=str(path))
