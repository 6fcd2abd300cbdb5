"""Cost of copyhunt's device capture against torch.profiler(with_stack=True) alone, on one MoE step.

Run on a GPU: ``python benchmarks/device_overhead.py [--json FILE]``. Same step (the bundled MoE
demo stack, eager), five configurations, each repeated after warm-up, medians reported:

- bare: the step alone;
- hunt: copyhunt's dispatch capture only (``hunt()``);
- profiler+stack: ``torch.profiler.profile(CPU+CUDA, with_stack=True)`` around the step, then
  ``export_chrome_trace`` (what a user of torch.profiler does to look at it);
- hunt+device: ``hunt(device_trace=True)``: dispatch capture + Kineto without stacks + the
  ``copyhunt#<seq>`` bridge + export + join;
- profiler (no stack): for reference.

"region ms" is the wall time of the profiled block (synchronised), "total ms" adds the
post-processing (export; for copyhunt also parse + join).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch


def _step_factory(layers: int, tokens: int) -> Callable[[], Any]:
    from copyhunt_moe import demo

    config = demo.resolve_config(layers=layers, tokens=tokens)
    stack = demo.build_stack(config, "baseline")
    x = demo.make_input(config)

    def step() -> Any:
        with torch.no_grad():
            return stack(x)

    return step


def _time(fn: Callable[[], tuple[float, float]], reps: int) -> tuple[float, float]:
    region, total = [], []
    for _ in range(reps):
        r, t = fn()
        region.append(r)
        total.append(t)
    return statistics.median(region), statistics.median(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from copyhunt.hunting import hunt

    step = _step_factory(args.layers, args.tokens)
    tmp = Path(tempfile.mkdtemp(prefix="copyhunt-overhead-"))
    for _ in range(3):
        step()
    torch.cuda.synchronize()

    def bare() -> tuple[float, float]:
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        r = time.perf_counter() - t0
        return r * 1e3, r * 1e3

    def dispatch_only() -> tuple[float, float]:
        t0 = time.perf_counter()
        with hunt():
            step()
            torch.cuda.synchronize()
            r = time.perf_counter() - t0
        return r * 1e3, (time.perf_counter() - t0) * 1e3

    def prof(stack: bool) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=stack) as p:
                step()
                torch.cuda.synchronize()
            r = time.perf_counter() - t0
            p.export_chrome_trace(str(tmp / "p.json"))
            return r * 1e3, (time.perf_counter() - t0) * 1e3

        return run

    breakdown: list[dict[str, float]] = []

    def device_hunt() -> tuple[float, float]:
        t0 = time.perf_counter()
        h = hunt(device_trace=True)
        h.start()
        step()
        torch.cuda.synchronize()
        r = time.perf_counter() - t0
        trace = h.stop()  # Kineto stop + export + parse + join
        breakdown.append(trace.meta.device_join["timings_ms"])
        return r * 1e3, (time.perf_counter() - t0) * 1e3

    rows = {}
    for name, fn in (("bare", bare), ("hunt", dispatch_only), ("profiler", prof(False)),
                     ("profiler+stack", prof(True)), ("hunt+device", device_hunt)):
        fn()  # warm-up of this configuration
        rows[name] = _time(fn, args.reps)
    print(f"{'configuration':<16} {'region ms':>10} {'total ms':>10}   (MoE step: {args.layers} layers, M={args.tokens}, "
          f"{torch.cuda.get_device_name()})")
    for name, (r, t) in rows.items():
        print(f"{name:<16} {r:>10.2f} {t:>10.2f}")
    parts = {k: round(statistics.median(b[k] for b in breakdown), 2) for k in breakdown[-1]}
    print(f"hunt+device post-processing, median ms: {parts}")
    ok_region = rows["hunt+device"][0] <= rows["profiler+stack"][0]
    ok_total = rows["hunt+device"][1] <= rows["profiler+stack"][1]
    print(f"target hunt+device <= profiler+stack: region {'met' if ok_region else 'MISSED'}, total {'met' if ok_total else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({
            "device": torch.cuda.get_device_name(), "torch": torch.__version__, "layers": args.layers,
            "tokens": args.tokens, "reps": args.reps,
            "rows": {k: {"region_ms": round(v[0], 3), "total_ms": round(v[1], 3)} for k, v in rows.items()},
            "target_region_met": ok_region, "target_total_met": ok_total, "hunt_device_post_ms": parts,
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
