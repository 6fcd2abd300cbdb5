"""torch.compile programs under copyhunt (issue 14): what survives compilation, per execution, at which line.

One part per run (``--part step|llama|moe``), so a slow compile or a crash in one part leaves the others'
results; ``benchmarks/gpu_compile.sh`` runs all three and prints the summaries. Each part:

1. compiles the program WITHOUT any hunt and keeps its outputs;
2. ``torch._dynamo.reset()``, then compiles and runs it again under ``copyhunt.hunt(device_trace=...)``
   (compiled code stays compiled; the copies Inductor kept are recorded per execution), and checks the
   outputs are bit-identical to step 1 (the hunt must not change what Inductor's code computes);
3. runs it under ``copyhunt.hunt(compiled="eager")`` (op by op, the old behaviour);
4. diffs 3 against 2 per site (``copyhunt diff``): which copies compilation removed, kept or added.

Parts: ``step`` (the CPU test's program: fused transpose-contiguous, cat, copy into a mutated input, a
graph break, a cast Inductor removes, an in-place add on an input (no copy), a copy kernel of its own, a copy Inductor adds for a convolution's
transposed input, a dynamic recompile), ``llama`` (a random
2-layer transformers Llama, ``generate()`` with a static cache and a compiled forward), ``moe`` (the
bundled MoE baseline path, compiled). Runs on the CPU too (small sizes), which is how it was checked.

    python benchmarks/gpu_compile.py --part step --out /tmp/c    # writes /tmp/c/step.json (+ traces)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

import copyhunt
from copyhunt.analysis import judge
from copyhunt.analysis.diff import diff_traces
from copyhunt.records import Trace
from copyhunt.view import view

DEV = "cuda" if torch.cuda.is_available() else "cpu"


# --- the programs -------------------------------------------------------------------------------------


def step(x: torch.Tensor, buf: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The CPU test's program (tests/test_capture_compiled.py), unchanged."""
    y = x.t().contiguous()
    z = torch.cat([y, y * 2])
    buf.copy_(x)
    counter.add_(1)
    torch._dynamo.graph_break()
    w = (z + 1).to(torch.float64)
    k = x.t().contiguous()
    c = torch.nn.functional.conv2d(x.t()[None, None], buf[None, None, :2, :2])
    return w.sum(0), y @ x, k, c


def run_step() -> tuple[Callable[[], Any], Callable[[], Any]]:
    n0 = 1024 if DEV == "cuda" else 16
    shapes = (n0, n0, n0, n0 * 3 // 2, n0 * 5 // 4)

    def make() -> Callable[[], Any]:
        fn = torch.compile(step)

        def go() -> Any:
            outs = []
            for i, n in enumerate(shapes):
                g = torch.Generator(device=DEV).manual_seed(i)
                x = torch.randn(n, n, generator=g, device=DEV)
                buf = torch.zeros(n, n, device=DEV)
                counter = torch.zeros(n, device=DEV)
                outs.append((fn(x, buf, counter), buf, counter))
            return outs

        return go

    return make, make


def run_llama() -> tuple[Callable[[], Any], Callable[[], Any]]:
    from transformers import LlamaConfig, LlamaForCausalLM

    big = DEV == "cuda"
    cfg = LlamaConfig(
        vocab_size=1024 if big else 256, hidden_size=256 if big else 64, intermediate_size=512 if big else 128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval().to(DEV)
    if big:
        model = model.to(torch.bfloat16)
    ids = torch.randint(3, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1)).to(DEV)
    eager_forward = model.forward

    def make() -> Callable[[], Any]:
        model.forward = torch.compile(eager_forward)

        def go() -> Any:
            with torch.no_grad():
                return model.generate(
                    ids, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                    cache_implementation="static", disable_compile=True,
                )

        return go

    return make, make


def run_moe() -> tuple[Callable[[], Any], Callable[[], Any]]:
    from copyhunt_moe.demo import build_stack, make_input, resolve_config

    config = resolve_config()
    stack = build_stack(config, "baseline")

    def make() -> Callable[[], Any]:
        compiled = torch.compile(stack)

        def go() -> Any:
            outs = []
            with torch.no_grad():
                for _ in range(3):
                    outs.append(compiled(make_input(config)))
            stack.workspace.release()
            return outs

        return go

    return make, make


PARTS = {"step": run_step, "llama": run_llama, "moe": run_moe}


# --- running one part --------------------------------------------------------------------------------


def _sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _rows(trace: Trace) -> list[dict[str, Any]]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in trace.read_copies():
        info = c.compiled
        how = info.how if info is not None else None
        key = (c.site.short() if c.site else "(no site)", c.op, c.origin, how)
        r = rows.setdefault(key, {"site": key[0], "op": c.op, "origin": c.origin, "how": how,
                                  "kernels": list(info.kernels) if info is not None else None, "count": 0, "bytes": 0,
                                  "device_us": None, "kernel_us": None, "verdict": c.verdict})
        r["count"] += 1
        r["bytes"] += c.bytes
        if c.device is not None:
            r["device_us"] = round((r["device_us"] or 0.0) + c.device.time_us, 3)
        if info is not None and info.kernel_us is not None:
            r["kernel_us"] = round((r["kernel_us"] or 0.0) + info.kernel_us, 3)
    return sorted(rows.values(), key=lambda r: -r["bytes"])


def run_part(name: str, out: Path) -> dict[str, Any]:
    make_untraced, make_traced = PARTS[name]()
    device_trace = DEV == "cuda"
    result: dict[str, Any] = {"part": name, "device": DEV, "torch": torch.__version__}
    counters = torch._dynamo.utils.counters

    torch._dynamo.reset()
    t = time.perf_counter()
    untraced = make_untraced()()
    _sync()
    result["untraced_s"] = round(time.perf_counter() - t, 2)

    torch._dynamo.reset()
    counters.clear()
    go = make_traced()
    t = time.perf_counter()
    with copyhunt.hunt(device_trace=device_trace) as h:
        traced = go()
        _sync()
    result["traced_s"] = round(time.perf_counter() - t, 2)
    result["graph_breaks"] = sum(counters["graph_break"].values())
    result["unique_graphs"] = counters["stats"].get("unique_graphs", 0)
    result["outputs_identical"] = _equal(untraced, traced)
    compiled = judge(h.trace)

    with copyhunt.hunt(compiled="eager", device_trace=device_trace) as e:
        go()
        _sync()
    eager = judge(e.trace)
    copyhunt.save_trace(compiled, out / f"{name}-compiled.json", overwrite=True)
    copyhunt.save_trace(eager, out / f"{name}-eager.json", overwrite=True)

    d = diff_traces(view(eager), view(compiled))
    result["compiled"] = {"copies": len(compiled.copies), "bytes": compiled.total_bytes, "rows": _rows(compiled),
                          "notes": list(compiled.meta.notes), "meta_compiled": asdict(compiled.meta.compiled) if compiled.meta.compiled else None}
    result["eager"] = {"copies": len(eager.copies), "bytes": eager.total_bytes, "notes": list(eager.meta.notes)}
    result["diff"] = [
        {"status": c.status, "site": c.key.short(), "op": c.key.op, "eager": c.before.count, "compiled": c.after.count,
         "eager_bytes": c.before.bytes, "compiled_bytes": c.after.bytes}
        for c in d.changes
    ]
    return result


def summary(r: dict[str, Any]) -> str:
    lines = [f"== {r['part']} on {r['device']} (torch {r['torch']}): outputs identical with/without the hunt: "
             f"{r.get('outputs_identical')}; graphs {r.get('unique_graphs')}, graph breaks {r.get('graph_breaks')}; "
             f"untraced {r.get('untraced_s')} s, traced {r.get('traced_s')} s"]
    if "error" in r:
        return "\n".join(lines + [f"   FAILED: {r['error']}"])
    c, e = r["compiled"], r["eager"]
    lines.append(f"   compiled: {c['copies']} copies, {c['bytes']} B   eager (--eager): {e['copies']} copies, {e['bytes']} B")
    lines.append(f"   {'site':44} {'op':26} {'how':7} {'n':>4} {'bytes':>10} {'dev us':>8} {'kern us':>8}  kernels")
    for row in c["rows"][:12]:
        dev = "-" if row["device_us"] is None else f"{row['device_us']:.1f}"
        kern = "-" if row["kernel_us"] is None else f"{row['kernel_us']:.1f}"
        kernels = ",".join(row["kernels"] or [])[:60]
        lines.append(f"   {row['site'][-44:]:44} {row['op'][:26]:26} {str(row['how'] or row['origin'])[:7]:7} "
                     f"{row['count']:>4} {row['bytes']:>10} {dev:>8} {kern:>8}  {kernels}")
    moved = [d for d in r["diff"] if d["status"] != "same"]
    lines.append(f"   diff eager -> compiled: {sum(d['status'] == 'removed' for d in moved)} sites removed, "
                 f"{sum(d['status'] == 'added' for d in moved)} added, {sum(d['status'] == 'changed' for d in moved)} changed, "
                 f"{sum(d['status'] == 'same' for d in r['diff'])} same")
    for d in moved[:8]:
        lines.append(f"     {d['status']:8} {d['site'][-44:]:44} {d['op'][:26]:26} {d['eager']} -> {d['compiled']}")
    for note in c["notes"]:
        if note.startswith("torch.compile"):
            lines.append(f"   note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=sorted(PARTS), required=True)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/copyhunt-compile"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        r = run_part(args.part, out)
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON, and the exit code says it failed
        r = {"part": args.part, "device": DEV, "torch": torch.__version__, "error": f"{type(exc).__name__}: {exc}",
             "traceback": traceback.format_exc()}
    (out / f"{args.part}.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    print(summary(r))
    return 1 if "error" in r or not r.get("outputs_identical") else 0


if __name__ == "__main__":
    sys.exit(main())
