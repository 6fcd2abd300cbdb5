"""What following child processes costs: a fork + spawn pool script run untraced, traced with
``--no-follow`` and traced with children followed (the default), A/B/C in the same run.

    python benchmarks/follow_overhead.py [--repeat 2] [--json OUT.json]

Prints a table (best wall seconds of each way, ratio to untraced) and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = '''\
import multiprocessing as mp
import torch


def task(n):
    x = torch.ones(n, 64)
    return float(x.t().contiguous().sum())  # one copy per task


if __name__ == "__main__":
    torch.ones(8).clone()
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(2) as pool:
            pool.map(task, [256] * 8, chunksize=1)
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    ways = {
        "untraced": [sys.executable, "pools.py"],
        "trace --no-follow": [sys.executable, "-m", "copyhunt", "trace", "--no-follow", "pools.py", "-o", "nf.json", "--force"],
        "trace (follow)": [sys.executable, "-m", "copyhunt", "trace", "pools.py", "-o", "f.json", "--force"],
    }
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        Path(d, "pools.py").write_text(SCRIPT)
        for _ in range(args.repeat):
            for name, cmd in ways.items():  # interleaved: A, B, C, A, B, C
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    base = best["untraced"]
    print(f"{'way':<20} {'best s':>8} {'x untraced':>11}")
    for name, s in best.items():
        print(f"{name:<20} {s:>8.2f} {s / base:>11.2f}")
    doc = {"repeat": args.repeat, "seconds": {k: round(v, 3) for k, v in best.items()},
           "ratio": {k: round(v / base, 2) for k, v in best.items()}, "cpus": os.cpu_count()}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
