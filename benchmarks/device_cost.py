"""Where copyhunt's device capture spends its time (issue 17, GPU part): one step, fastest of ``--reps``.

``python benchmarks/device_cost.py [--reps 7] [--workload moe|qwen3moe] [--cpu-emulate]``

Rows (ms, block = the step synchronised; total = with post-processing):
- ``hunt()``: block / total;
- ``hunt + profiler, no ranges``: the device capture's profiler session without the ``copyhunt#<seq>``
  ranges (block only: the join is meaningless without them);
- ``hunt(device_trace=True)``: block / total, and the capture's own stop / export / parse / join
  (``meta.device_join.timings_ms``) and what is left (records, enter, warm-up);
- ``torch.profiler``: CPU(+CUDA), and with stack + shapes, total.
``--cpu-emulate`` runs the device capture with CPU activities only (no GPU: the CPU-side costs).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--workload", default="moe")
    ap.add_argument("--cpu-emulate", action="store_true")
    ap.add_argument("--cprofile", action="store_true", help="also: cProfile of one device hunt's stop()")
    args = ap.parse_args(argv)
    import copyhunt
    from copyhunt import hunting
    from copyhunt.capture import device as devmod

    cuda = torch.cuda.is_available()
    if not cuda:
        if not args.cpu_emulate:
            print("no GPU: pass --cpu-emulate", file=sys.stderr)
            return 2
        devmod.gpu_available = lambda: True  # CPU activities only (DeviceCapture handles no-CUDA)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if args.workload == "moe":
        from device_overhead import moe_step

        step = moe_step(4, 8)
    else:
        from device_overhead import qwen3moe_generate

        step = qwen3moe_generate()
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    stats: dict[str, list[float]] = {}

    def note(k: str, v: float) -> None:
        stats.setdefault(k, []).append(v)

    def run_hunt(device: bool, ranges: bool = True) -> None:
        orig = hunting.Hunt.__dict__["_device_capture"]
        if not ranges:
            def nocap() -> Any:
                d = orig.__func__()
                d.op_range = None
                return d
            hunting.Hunt._device_capture = staticmethod(nocap)  # type: ignore[method-assign]
        try:
            t0 = time.perf_counter()
            h = copyhunt.hunt(device_trace=device)
            h.start()
            t1 = time.perf_counter()
            step()
            sync()
            t2 = time.perf_counter()
            tr = h.stop()
            t3 = time.perf_counter()
        finally:
            hunting.Hunt._device_capture = orig  # type: ignore[method-assign]
        name = "hunt()" if not device else ("hunt(device_trace=True)" if ranges else "hunt + profiler, no ranges")
        note(f"{name}: start", (t1 - t0) * 1e3)
        note(f"{name}: block", (t2 - t1) * 1e3)
        note(f"{name}: stop", (t3 - t2) * 1e3)
        note(f"{name}: total", (t3 - t0) * 1e3)
        if device and ranges:
            tm = (tr.meta.device_join or {}).get("timings_ms", {})
            for k, v in tm.items():
                note(f"{name}: stop/{k}", v)
            note(f"{name}: n ops", len(tr.ops))
            note(f"{name}: gpu events", (tr.meta.device_join or {}).get("gpu_events", 0))

    def run_prof(stack: bool) -> None:
        name = f"torch.profiler{' +stack+shapes' if stack else ''}"
        t0 = time.perf_counter()
        with profile(activities=acts, with_stack=stack, record_shapes=stack):
            t1 = time.perf_counter()
            step()
            sync()
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        note(f"{name}: block", (t2 - t1) * 1e3)
        note(f"{name}: stop", (t3 - t2) * 1e3)
        note(f"{name}: total", (t3 - t0) * 1e3)

    confs: list[Callable[[], None]] = [
        lambda: run_hunt(False), lambda: run_hunt(True, False), lambda: run_hunt(True),
        lambda: run_prof(False), lambda: run_prof(True),
    ]
    for c in confs:
        c()
    stats.clear()
    for _ in range(args.reps):
        for c in confs:
            gc.collect()
            c()
    if args.cprofile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        h = copyhunt.hunt(device_trace=True)
        h.start()
        step()
        sync()
        pr.enable()
        h.stop()
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
    dev = torch.cuda.get_device_name() if cuda else "CPU (emulated device capture)"
    print(f"{dev}, torch {torch.__version__}, workload {args.workload}, fastest of {args.reps} (median in brackets)")
    for k, v in stats.items():
        v = sorted(v)
        print(f"  {k:<52}{v[0]:>9.2f}  ({v[len(v) // 2]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
