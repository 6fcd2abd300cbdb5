"""Capture the real GPU fixtures of ``traces/moe-h200/``: copyhunt traces with device capture + Kineto traces.

Run on a GPU from the repository root: ``python traces/capture_moe_traces.py OUTDIR``. Writes:

- ``moe-baseline.json`` / ``moe-fixed.json``: ``copyhunt.hunt(device_trace=True)`` of the bundled MoE
  demo (its GPU defaults: minimax-m2.5-tp4, Triton experts), judged by the verdict analysis;
- ``moe-baseline.kineto.json.gz`` / ``moe-fixed.kineto.json.gz``: the Kineto Chrome traces of the
  same regions (with the ``copyhunt#<seq>`` bridge ranges), which the copyhunt traces point to;
- ``graph-hunt.json`` + ``graph-hunt.kineto.json.gz``: a CUDA graph holding 2 copies among other
  kernels, captured and replayed 3 times inside one hunt.

``meta.kineto_trace`` is rewritten to the path relative to the repository root.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

from copyhunt.hunting import hunt
from copyhunt.records import Trace
from copyhunt.tracefile import save

REL = "traces/moe-h200"


def _keep(trace: Trace, out: Path, name: str) -> None:
    src = trace.meta.kineto_trace
    meta = trace.meta
    if src:
        with open(src, "rb") as fin, gzip.open(out / f"{name}.kineto.json.gz", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        meta = replace(meta, kineto_trace=f"{REL}/{name}.kineto.json.gz")
    from copyhunt.analysis import ensure_judged

    trace = ensure_judged(replace(trace, meta=meta))  # a failure of the analysis leaves a note, not a crash
    save(trace, out / f"{name}.json", overwrite=True)
    print(f"{name}: {len(trace.copies)} copies, gpu {trace.meta.gpu_time_us} us, {trace.meta.device_join}")


def moe(out: Path) -> None:
    from copyhunt_moe import demo

    for path in ("baseline", "fixed"):
        fn = getattr(demo, path)
        fn()  # warm-up: Triton compiles outside the region
        with hunt(device_trace=True) as h:
            fn()
        _keep(replace(h.trace, meta=replace(h.trace.meta, target=f"copyhunt_moe.demo:{path}")), out, f"moe-{path}")


def graph(out: Path) -> None:
    M, K = 64, 3072
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(K, K, device="cuda", dtype=torch.bfloat16)
    o = torch.empty(M, K, device="cuda", dtype=torch.bfloat16)
    o32 = torch.empty(M, K, device="cuda", dtype=torch.float32)

    def body() -> None:
        y = torch.relu(x @ w)
        o.copy_(y)  # memcpy node
        z = o * 2
        o32.copy_(z)  # copy-kernel node
        torch.sigmoid(o32)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        body()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with hunt(device_trace=True) as h:
        with torch.cuda.graph(g):
            body()
        for _ in range(3):
            g.replay()
    _keep(replace(h.trace, meta=replace(h.trace.meta, target="traces/capture_moe_traces.py:graph")), out, "graph-hunt")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REL)
    out.mkdir(parents=True, exist_ok=True)
    graph(out)
    moe(out)
