"""The 2-rank tensor-parallel MoE step that ``benchmarks/gpu_tp_moe.py`` runs (issue 19).

Split: **TP2** of MiniMax M2.5's MoE (E=256, K=3072, top-8, sigmoid + bias): each rank holds every
expert with half the intermediate size (N = 1536 / 2 = 768, preset ``minimax-m2.5-tp2`` built here
from ``copyhunt_moe.presets``), computes its partial MoE output through ``copyhunt_moe``'s modular
kernel (baseline or fixed path) and ``torch.distributed.all_reduce``s it (NCCL, rank r on cuda:r)
before the residual add, as vLLM's TP MoE does:

    for layer in stack.layers:  y = layer(x); all_reduce(y); x = x + y

Both ranks build the stack with the SAME seed (same gate and bias, so the routing agrees, and the
same input): the shard weights are seeded random numbers, identical on both ranks, which changes no
copy and no kernel time (a real checkpoint's shards differ only in values). On the CPU (no CUDA) the
job runs with gloo, the ``torch`` backend and a tiny TP2 preset (E=8, K=64, N=16, top-2).

Modes (``--mode``):
- ``baseline`` / ``fixed``: ``--steps`` steps at each M of ``--tokens``, nothing else (what the
  trace records). Per rank and step: baseline 2 d2d copies per layer (``modular.py`` experts-copy
  and finalize-copy, M x K bf16 each), fixed 0; one ``c10d.allreduce_`` per layer (a collective row).
  No host reads, no barriers: the trace holds exactly those.
- ``bench``: untraced A/B per M: ``--warmup`` steps, then ``--steps`` steps timed one by one with
  CUDA events (both ranks step together: every layer's all_reduce synchronises them), baseline and
  fixed alternated over ``--rounds`` rounds; medians per rank into ``--out``/bench_rank<R>.json,
  with baseline vs fixed outputs compared. Twice: eager (host-bound at these sizes: ~1 ms of Python
  and launches per layer, so eager savings are mostly host time) and with each step captured in one
  CUDA graph, NCCL all_reduce included, replayed (device time only: the saving the copies' device
  time predicts). The workspace is not released between M values in bench (a captured graph holds
  its address; M ascends so it only grows, and each M's graphs are dropped before the next M).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from copyhunt_moe.backends import make_backend
from copyhunt_moe.layer import MoEStack
from copyhunt_moe.presets import PRESETS


def tp2_preset(cuda: bool):
    if cuda:
        return replace(PRESETS["minimax-m2.5-tp4"], name="minimax-m2.5-tp2", intermediate=1536 // 2)
    return replace(PRESETS["tiny"], name="tiny-tp2", intermediate=32 // 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("baseline", "fixed", "bench"), required=True)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", default="8", help="comma-separated M values")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=dev if cuda else None)
    rank = dist.get_rank()
    preset = tp2_preset(cuda)
    backend = make_backend("auto" if cuda else "torch", device=dev)
    first_mode = "fixed" if args.mode == "fixed" else "baseline"
    stack = MoEStack(preset, backend, layers=args.layers, mode=first_mode, device=dev, seed=0)
    tokens = [int(t) for t in args.tokens.split(",")]

    def make_x(m: int) -> torch.Tensor:
        gen = torch.Generator(device=dev)
        gen.manual_seed(10_000 + m)
        return torch.randn((m, preset.hidden), generator=gen, device=dev, dtype=torch.bfloat16)

    def step(x: torch.Tensor) -> torch.Tensor:
        for layer in stack.layers:
            y = layer(x)  # this rank's partial MoE output (its N shard)
            dist.all_reduce(y)  # COLLECTIVE: sum of the TP partials, M x K bf16
            x = x + y
        return x

    if args.mode in ("baseline", "fixed"):
        with torch.no_grad():
            for m in tokens:
                x = make_x(m)
                for _ in range(args.steps):
                    step(x)
                stack.workspace.release()
        if cuda:
            torch.cuda.synchronize()
        dist.destroy_process_group()
        return

    def bench_graphs(x: torch.Tensor) -> dict:
        """The same A/B with each step captured in one CUDA graph (NCCL all_reduce included) and
        replayed: no host launch overhead, so the saving is the device time of the copies removed."""
        try:
            graphs, outs = {}, {}
            for mode in ("baseline", "fixed"):
                stack.set_mode(mode)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        step(x)
                torch.cuda.current_stream().wait_stream(side)
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    outs[mode] = step(x)
                graphs[mode] = g
            times: dict[str, list[float]] = {"baseline": [], "fixed": []}
            for _ in range(args.rounds):
                for mode in ("baseline", "fixed"):
                    g = graphs[mode]
                    for _ in range(args.warmup):
                        g.replay()
                    torch.cuda.synchronize()
                    dist.all_reduce(torch.zeros(1, device=dev))  # line the ranks up before timing
                    torch.cuda.synchronize()
                    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                          for _ in range(args.steps)]
                    for s, e in ev:
                        s.record()
                        g.replay()
                        e.record()
                    torch.cuda.synchronize()
                    times[mode] += [s.elapsed_time(e) * 1000.0 for s, e in ev]
            b, f = statistics.median(times["baseline"]), statistics.median(times["fixed"])
            diff = (outs["baseline"].float() - outs["fixed"].float()).abs().max().item()
            del graphs, outs
            return {"baseline_us": round(b, 2), "fixed_us": round(f, 2), "saved_us": round(b - f, 2),
                    "saved_pct": round(100 * (b - f) / b, 2) if b else None,
                    "baseline_p10_p90": [round(q, 2) for q in statistics.quantiles(times["baseline"], n=10)[::8]],
                    "fixed_p10_p90": [round(q, 2) for q in statistics.quantiles(times["fixed"], n=10)[::8]],
                    "samples": len(times["baseline"]), "max_abs_diff_baseline_vs_fixed": diff}
        except Exception as e:  # noqa: BLE001 - the eager A/B stands without it
            torch.cuda.synchronize()
            return {"error": f"{type(e).__name__}: {e}"[:500]}

    # bench
    results: dict = {"rank": rank, "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if cuda else "cpu",
                     "torch": torch.__version__, "preset": preset.name, "layers": args.layers, "backend": backend.name,
                     "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "per_M": {}}
    with torch.no_grad():
        for m in tokens:
            x = make_x(m)
            outs = {}
            times: dict[str, list[float]] = {"baseline": [], "fixed": []}
            for mode in ("baseline", "fixed"):
                stack.set_mode(mode)
                outs[mode] = step(x).clone()
                for _ in range(args.warmup):
                    step(x)
            for _ in range(args.rounds):
                for mode in ("baseline", "fixed"):
                    stack.set_mode(mode)
                    step(x)
                    if cuda:
                        torch.cuda.synchronize()
                    dist.all_reduce(torch.zeros(1, device=dev))  # line the ranks up before timing
                    if cuda:
                        torch.cuda.synchronize()
                        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                              for _ in range(args.steps)]
                        for s, e in ev:
                            s.record()
                            step(x)
                            e.record()
                        torch.cuda.synchronize()
                        times[mode] += [s.elapsed_time(e) * 1000.0 for s, e in ev]
                    else:
                        for _ in range(args.steps):
                            t0 = time.perf_counter()
                            step(x)
                            times[mode].append((time.perf_counter() - t0) * 1e6)
            b, f = statistics.median(times["baseline"]), statistics.median(times["fixed"])
            if args.out is not None:  # the eager numbers so far, in case the graph part hangs
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"bench_rank{rank}.json").write_text(json.dumps(
                    {**results, "per_M": {**results["per_M"], str(m): {"baseline_us": round(b, 2), "fixed_us": round(f, 2),
                                                                        "saved_us": round(b - f, 2)}}}, indent=1))
            graph = bench_graphs(x) if cuda else None
            diff = (outs["baseline"].float() - outs["fixed"].float()).abs().max().item()
            results["per_M"][str(m)] = {
                "baseline_us": round(b, 2), "fixed_us": round(f, 2), "saved_us": round(b - f, 2),
                "saved_pct": round(100 * (b - f) / b, 2) if b else None,
                "baseline_p10_p90": [round(q, 2) for q in statistics.quantiles(times["baseline"], n=10)[::8]],
                "fixed_p10_p90": [round(q, 2) for q in statistics.quantiles(times["fixed"], n=10)[::8]],
                "samples": len(times["baseline"]), "max_abs_diff_baseline_vs_fixed": diff,
                "graph": graph,
            }
            print(f"rank{rank} M={m}: baseline {b:.1f} us, fixed {f:.1f} us, saved {b - f:.1f} us "
                  f"(max |diff| {diff})", flush=True)
            if graph and "saved_us" in graph:
                print(f"rank{rank} M={m} CUDA graph: baseline {graph['baseline_us']:.1f} us, fixed {graph['fixed_us']:.1f} us, "
                      f"saved {graph['saved_us']:.1f} us (max |diff| {graph['max_abs_diff_baseline_vs_fixed']})", flush=True)
            elif graph:
                print(f"rank{rank} M={m} CUDA graph: {graph}", flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"bench_rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
