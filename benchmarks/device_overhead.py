"""Capture cost on the GPU: issue 17's table, per workload, all configurations interleaved in one process.

Run on a GPU (torch 2.11+, no pytest needed): ``python benchmarks/device_overhead.py [--reps 5] [--json FILE]``
or ``bash benchmarks/gpu_overhead.sh`` (the lead's one command, under 4 minutes).

Workloads (eager decode steps):
- ``moe``: the bundled MoE demo stack (``copyhunt_moe``), ``--layers`` layers, ``--tokens`` tokens;
- ``qwen3moe``: a transformers Qwen3-MoE ``generate()`` of 4 tokens, batch 2, random weights, bf16
  (skipped with one line when transformers is not installed).

Configurations: untraced; a bare no-op TorchDispatchMode; ``hunt(record_ops=False)``; ``hunt()``;
``hunt(device_trace=True)`` (what ``copyhunt trace`` runs on a GPU); ``torch.profiler`` CPU+CUDA; the
same with ``with_stack=True, record_shapes=True``. Each time covers the block AND its post-processing
(building the records; the profiler's exit; for the device hunt also the Kineto export and join), so
what is compared is what a user waits for. Fastest of ``--reps`` interleaved rounds.

Targets (issue 17): ``hunt(device_trace=True)`` <= profiler with stacks; ``hunt()`` <= 1.5x the bare mode
(the traced block, as on the CPU: ``hunt(), block only``; ``hunt()`` adds building the records). ``bare,
own Dynamo switch`` is a bare mode that switches Dynamo's hook itself, as copyhunt's mode does.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch


sys.path.insert(0, str(Path(__file__).parent))
from overhead import BareMode, LeanBareMode  # noqa: E402  (the same floors as the CPU benchmark)


def moe_step(layers: int, tokens: int) -> Callable[[], Any]:
    """One eager step of the bundled MoE demo stack."""
    from copyhunt_moe import demo

    config = demo.resolve_config(layers=layers, tokens=tokens)
    stack = demo.build_stack(config, "baseline")
    x = demo.make_input(config)

    def step() -> Any:
        with torch.no_grad():
            return stack(x)

    return step


def qwen3moe_generate() -> Callable[[], Any] | None:
    """A transformers Qwen3-MoE generate() of 4 tokens, batch 2, random weights, bf16 (None without transformers)."""
    try:
        import transformers
    except ImportError:
        return None
    torch.manual_seed(0)
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=32, num_experts=16, num_experts_per_tok=4,
        max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = transformers.Qwen3MoeForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(3, 1024, (2, 16), device="cuda")

    def run() -> Any:
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)

    return run


def configurations(step: Callable[[], Any]) -> dict[str, Callable[[], Any]]:
    """Each configuration runs ``step`` once and returns after its post-processing, synchronised (one
    that times itself returns its milliseconds)."""
    from torch.profiler import ProfilerActivity, profile

    import copyhunt

    sync = torch.cuda.synchronize

    def untraced() -> None:
        step()
        sync()

    def bare() -> None:
        with BareMode():
            step()
            sync()

    def lean() -> None:
        with LeanBareMode():
            step()
            sync()

    def hunt_block() -> float:
        # The traced block alone (what the program feels), without building the records at exit.
        h = copyhunt.hunt()
        h.start()
        t0 = time.perf_counter()
        step()
        sync()
        ms = (time.perf_counter() - t0) * 1e3
        h.stop()
        return ms

    def hunt(**kw: Any) -> Callable[[], None]:
        def run() -> None:
            with copyhunt.hunt(**kw):
                step()
                sync()

        return run

    def prof(stack: bool) -> Callable[[], None]:
        def run() -> None:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=stack, record_shapes=stack):
                step()
                sync()

        return run

    return {
        "untraced": untraced,
        "bare TorchDispatchMode": bare,
        "bare, own Dynamo switch": lean,
        "hunt(record_ops=False)": hunt(record_ops=False),
        "hunt(), block only": hunt_block,
        "hunt()": hunt(),
        "hunt(device_trace=True)": hunt(device_trace=True),
        "torch.profiler (CPU+CUDA)": prof(False),
        "torch.profiler (CPU+CUDA, stack, shapes)": prof(True),
    }


def measure(step: Callable[[], Any], reps: int) -> dict[str, float]:
    """Fastest ms per configuration over ``reps`` interleaved rounds (after one warm-up round)."""
    confs = configurations(step)
    for fn in confs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in confs}
    for _ in range(reps):
        for name, fn in confs.items():
            gc.collect()  # a clean cyclic-GC state per run (see overhead.py _time)
            t0 = time.perf_counter()
            own = fn()
            times[name].append(own if own is not None else (time.perf_counter() - t0) * 1e3)
    return {k: min(v) for k, v in times.items()}


def table(name: str, ms: dict[str, float]) -> str:
    """Issue 17's table for one workload."""
    u, b = ms["untraced"], ms["bare TorchDispatchMode"]
    lines = [f"{name}", f"{'configuration':<42}{'ms':>9}{'x untraced':>12}{'x bare':>9}"]
    lines += [f"{k:<42}{v:>9.1f}{v / u:>12.2f}{v / b:>9.2f}" for k, v in ms.items()]
    dev, pst = ms["hunt(device_trace=True)"], ms["torch.profiler (CPU+CUDA, stack, shapes)"]
    lines.append(f"hunt(device_trace=True) / profiler with stacks = {dev / pst:.2f} (target <= 1: {'met' if dev <= pst else 'MISSED'})")
    blk = ms["hunt(), block only"]
    lines.append(f"hunt() block / bare mode = {blk / b:.2f} (target <= 1.5: {'met' if blk <= 1.5 * b else 'MISSED'}); "
                 f"/ bare with copyhunt's Dynamo switch = {blk / ms['bare, own Dynamo switch']:.2f}; "
                 f"with building the records = {ms['hunt()'] / b:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every workload available, print the tables, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/device_overhead.py needs a CUDA/ROCm GPU", file=sys.stderr)
        return 2
    from copyhunt.capture import dispatch, native_recorder

    t0 = time.perf_counter()
    native = native_recorder.load() is not None
    recorder = f"compiled (ready in {time.perf_counter() - t0:.1f} s)" if native else f"Python ({native_recorder.unavailable_reason()})"
    print(f"recorder: {recorder}; mode's own Dynamo switch: {dispatch._OWN_DYNAMO_SWITCH}\n")
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "python": platform.python_version(), "reps": args.reps, "recorder": recorder,
                           "own_dynamo_switch": dispatch._OWN_DYNAMO_SWITCH, "workloads": {}}  # fmt: skip
    workloads: list[tuple[str, Callable[[], Callable[[], Any] | None]]] = [
        (f"moe: bundled MoE demo step, {args.layers} layers, M={args.tokens}", lambda: moe_step(args.layers, args.tokens)),
        ("qwen3moe: transformers Qwen3-MoE generate(), 4 tokens, batch 2, bf16", qwen3moe_generate),
    ]
    for name, make in workloads:
        step = make()
        if step is None:
            print(f"{name}: skipped (transformers is not installed)\n")
            continue
        ms = measure(step, args.reps)
        print(table(name, ms) + "\n", flush=True)
        out["workloads"][name.split(":")[0]] = {"title": name, "ms": {k: round(v, 3) for k, v in ms.items()}}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
