"""A transformers Qwen3-MoE ``generate()`` traced end to end with device capture: every copy on a line?

Issue 10's GPU check. A tiny Qwen3-MoE (random weights from a config: nothing downloaded, bf16) generates
greedily, untraced and then under ``copyhunt.hunt(device_trace=True)``; for each configuration it reports
copies and bytes by kind and by origin, the copies without a source line (target: 0) with what they are,
whether the generated ids are identical traced and untraced, and the device-join figures.

    python benchmarks/gpu_fidelity.py --out DIR            # on a GPU (device capture on)
    python benchmarks/gpu_fidelity.py --out DIR --device cpu --new-tokens 2   # CPU smoke run

Writes DIR/fidelity.json (the summary) and DIR/<config>.table.txt (copyhunt's table, every row); the
first configuration's full trace as DIR/<config>.trace.json.gz. Prints a short summary last.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from rich.console import Console  # noqa: E402

import copyhunt  # noqa: E402
from copyhunt.report.table import render_table  # noqa: E402
from copyhunt.tracefile import to_json  # noqa: E402
from copyhunt.view import view  # noqa: E402

CONFIGS = (
    # (name, experts implementation, grad context around generate())
    ("grouped_mm", "grouped_mm", "plain"),
    ("grouped_mm-inference_mode", "grouped_mm", "inference_mode"),
    ("eager", "eager", "plain"),
)


def build(device: str) -> tuple[Any, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=32, num_experts=16, num_experts_per_tok=2,
        max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    model = transformers.Qwen3MoeForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    ids = torch.randint(3, 1024, (2, 12), device=device)
    mask = torch.ones_like(ids)
    return model, ids, mask


def generate(model: Any, ids: torch.Tensor, mask: torch.Tensor, experts: str, ctx: str, new: int) -> torch.Tensor:
    model.config._experts_implementation = experts
    cm = torch.inference_mode() if ctx == "inference_mode" else torch.no_grad()
    with cm:
        return model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)


def describe(c: Any) -> dict[str, Any]:
    return {
        "origin": c.origin, "op": c.op, "kind": c.kind, "bytes": c.bytes, "seq": c.seq,
        "device_event": c.device.name if c.device else None, "module": c.module,
    }  # fmt: skip


def one(name: str, experts: str, ctx: str, model: Any, ids: torch.Tensor, mask: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    gpu = args.device != "cpu"
    generate(model, ids, mask, experts, ctx, args.new_tokens)  # warm-up: kernels, lazy imports
    if gpu:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    untraced = generate(model, ids, mask, experts, ctx, args.new_tokens)
    if gpu:
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    with copyhunt.hunt(device_trace=gpu) as h:
        traced = generate(model, ids, mask, experts, ctx, args.new_tokens)
    t2 = time.perf_counter()
    trace = h.trace
    assert trace is not None
    by_kind: dict[str, list[int]] = {}
    for c in trace.read_copies():
        row = by_kind.setdefault(c.kind, [0, 0])
        row[0] += 1
        row[1] += c.bytes
    no_site = [c for c in trace.read_copies() if c.site is None]
    buf = io.StringIO()
    render_table(view(trace), Console(file=buf, width=160, color_system=None), top=0)
    (args.out / f"{name}.table.txt").write_text(buf.getvalue())
    if name == CONFIGS[0][0]:
        with gzip.open(args.out / f"{name}.trace.json.gz", "wt") as f:
            json.dump(to_json(trace), f)
    return {
        "config": name,
        "experts": experts,
        "grad": ctx,
        "identical_ids": bool(torch.equal(untraced, traced)),
        "copies": len(trace.copies),
        "bytes": sum(c.bytes for c in trace.read_copies()),
        "by_kind": {k: {"copies": n, "bytes": b} for k, (n, b) in sorted(by_kind.items())},
        "by_origin": dict(Counter(c.origin for c in trace.read_copies())),
        "by_op_kind": {f"{op} {kind}": n for (op, kind), n in Counter((c.op, c.kind) for c in trace.read_copies()).most_common()},
        "no_site": len(no_site),
        "no_site_copies": [describe(c) for c in no_site[:40]],
        "device_join": trace.meta.device_join,
        "notes": list(trace.meta.notes),
        "ops": len(trace.ops),
        "untraced_s": round(t1 - t0, 3),
        "traced_s": round(t2 - t1, 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--new-tokens", type=int, default=16)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, ids, mask = build(args.device)
    env = {
        "torch": torch.__version__, "transformers": transformers.__version__, "copyhunt": copyhunt.__version__,
        "device": torch.cuda.get_device_name() if args.device != "cpu" else "cpu", "new_tokens": args.new_tokens,
    }  # fmt: skip
    results = []
    for name, experts, ctx in CONFIGS:
        try:
            results.append(one(name, experts, ctx, model, ids, mask, args))
        except Exception as exc:  # noqa: BLE001 - one failing configuration must not hide the others
            results.append({"config": name, "error": f"{type(exc).__name__}: {exc}"})
        (args.out / "fidelity.json").write_text(json.dumps({"env": env, "results": results}, indent=1))
    print(json.dumps(env))
    for r in results:
        if "error" in r:
            print(f"{r['config']}: ERROR {r['error']}")
            continue
        for c in r["no_site_copies"]:
            print(f"  {r['config']}: no source line: {c}")
        kinds = ", ".join(f"{k} {v['copies']} ({v['bytes']} B)" for k, v in r["by_kind"].items())
        dj = r["device_join"] or {}
        print(
            f"{r['config']}: {r['copies']} copies, {r['bytes']} B [{kinds}]; origins {r['by_origin']}; "
            f"WITHOUT SOURCE LINE: {r['no_site']}; ids identical: {r['identical_ids']}; "
            f"joined {dj.get('joined')}, unexplained {dj.get('unexplained')}; {r['ops']} ops; "
            f"untraced {r['untraced_s']} s, traced {r['traced_s']} s"
        )
    bad = [r for r in results if "error" in r or r["no_site"] or not r["identical_ids"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
