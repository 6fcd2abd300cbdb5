"""Issue 13 item 6: trace a 2-rank torchrun job whose ranks share one GPU, device capture on both ranks.

Runs ``benchmarks/gpu_ranks_job.py`` under ``python -m torch.distributed.run --nproc-per-node 2``
three ways: untraced (wall time), and under ``copyhunt trace`` (children followed, device capture
on: ``--device-trace`` when CUDA is available), then reads the run folder back: the merged table
(a column per rank with its device time), the per-rank JSON breakdown, and a check of every rank's
copy count against the job's own arithmetic.

    python benchmarks/gpu_ranks.py --out DIR          # GPU: device capture on both ranks
    python benchmarks/gpu_ranks.py --out DIR          # CPU: the same without device capture

Writes DIR/gpu_ranks.json (summary + the merged run document), DIR/merged_table.txt, the traces
under DIR/run/. Exit 0 when every rank's counts match, 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "benchmarks" / "gpu_ranks_job.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_args(nproc: int, extra: list[str], job: Path = JOB) -> list[str]:
    """torchrun's arguments for ``nproc`` ranks of ``job`` on a free local port (also benchmarks/gpu_tp_moe.py)."""
    return ["--nproc-per-node", str(nproc), "--master-port", str(free_port()), "--monitor-interval", "0.1", str(job), *extra]


def expected_copies(rank: int, cuda: bool, one_gpu_per_rank: bool = False) -> dict[str, int]:
    """The job's arithmetic: r + 1 d2d transposes; on a GPU also one h2d and one d2h (two d2h with
    --one-gpu-per-rank: the all_reduce result is read back from the GPU)."""
    if not cuda:
        return {"d2d": rank + 1}
    return {"d2d": rank + 1, "h2d": 1, "d2h": 2 if one_gpu_per_rank else 1}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--one-gpu-per-rank", action="store_true", help="NCCL, rank r on cuda:r (issue 19; needs nproc GPUs)")
    ap.add_argument("--timeout", type=int, default=150)
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--one-gpu-per-rank"] if args.one_gpu_per_rank else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           "COLUMNS": "140"}
    summary: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                     "nproc": args.nproc, "one_gpu_per_rank": args.one_gpu_per_rank}

    t0 = time.perf_counter()
    plain = subprocess.run([sys.executable, "-m", "torch.distributed.run", *torchrun_args(args.nproc, extra)],
                           env=env, capture_output=True, text=True, timeout=args.timeout)
    summary["untraced_s"] = round(time.perf_counter() - t0, 2)
    summary["untraced_rc"] = plain.returncode
    if plain.returncode != 0:
        print(plain.stderr[-3000:], file=sys.stderr)

    trace_file = out / "run.json"
    for stale in [trace_file, *sorted((out / "run").glob("*.json"))] if (out / "run").exists() else [trace_file]:
        stale.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "copyhunt", "trace", "-o", str(trace_file), "--device-trace" if cuda else "--no-device-trace",
           "-m", "torch.distributed.run", "--", *torchrun_args(args.nproc, extra)]
    t0 = time.perf_counter()
    traced = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout, cwd=out)
    summary["traced_s"] = round(time.perf_counter() - t0, 2)
    summary["traced_rc"] = traced.returncode
    summary["command"] = " ".join(cmd[1:])
    (out / "merged_table.txt").write_text(traced.stdout)
    print(traced.stdout)
    if traced.returncode != 0:
        print(traced.stderr[-4000:], file=sys.stderr)

    from copyhunt.analysis.runs import load_run, merge_run
    from copyhunt.report.runs_table import run_to_json

    ok = traced.returncode == 0 and plain.returncode == 0
    ranks = []
    if trace_file.exists():
        run = load_run([trace_file])
        merged = run_to_json(merge_run(run))
        summary["merged"] = merged
        for m in run.members:
            if m.rank is None:
                continue
            kinds: dict[str, int] = {}
            for c in m.trace.copies:
                kinds[c.kind] = kinds.get(c.kind, 0) + 1
            want = expected_copies(m.rank, cuda, args.one_gpu_per_rank)
            timed = [c for c in m.trace.read_copies() if c.device is not None]
            row = {"rank": m.rank, "pid": m.trace.meta.pid, "device": m.trace.meta.device, "copies_by_kind": kinds,
                   "expected": want, "match": kinds == want, "timed_copies": len(timed),
                   "device_us": round(sum(c.device.time_us for c in timed), 3) if timed else None,
                   "complete": m.trace.meta.complete, "error": m.trace.meta.error}
            ok = ok and row["match"] and row["complete"] and (not cuda or len(timed) == sum(want.values()))
            ranks.append(row)
        ok = ok and len(ranks) == args.nproc
    else:
        ok = False
    summary["ranks"] = ranks
    summary["traced_over_untraced"] = round(summary["traced_s"] / summary["untraced_s"], 2) if summary["untraced_s"] else None
    summary["ok"] = ok
    (out / "gpu_ranks.json").write_text(json.dumps(summary, indent=1))
    print(f"{'rank':>4}  {'pid':>7}  {'copies (got / expected)':<44}  {'timed':>5}  {'dev us':>9}  status")
    for r in ranks:
        got = ", ".join(f"{k} {v}" for k, v in sorted(r["copies_by_kind"].items()))
        want = ", ".join(f"{k} {v}" for k, v in sorted(r["expected"].items()))
        dev = "-" if r["device_us"] is None else f"{r['device_us']:.1f}"
        print(f"{r['rank']:>4}  {r['pid']:>7}  {got + ' / ' + want:<44}  {r['timed_copies']:>5}  {dev:>9}  "
              f"{'complete' if r['complete'] else r['error']}")
    print(f"untraced {summary['untraced_s']} s, traced {summary['traced_s']} s (x{summary['traced_over_untraced']}); "
          f"{'PASS' if ok else 'FAIL'}; wrote {out / 'gpu_ranks.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
