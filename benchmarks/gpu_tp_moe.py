"""Issue 19: a 2-rank NCCL tensor-parallel MoE step traced with device capture on both ranks.

Runs ``benchmarks/gpu_tp_moe_job.py`` (TP2 of MiniMax M2.5's MoE, N = 768 per rank, partial outputs
summed by an NCCL all_reduce per layer; see its docstring for the split) under
``python -m torch.distributed.run --nproc-per-node 2``, the way ``benchmarks/gpu_ranks.py`` does:

1. ``trace-baseline``: ``copyhunt trace --device-trace`` of one step, baseline path (``--layers``,
   M = ``--trace-tokens``): run folder DIR/baseline/run.json + run/rank0.json, run/rank1.json, the merged
   table (a column per rank with device time, imbalance, the collectives as rows) and per-rank checks:
   2 d2d copies per layer per rank at the modular kernel's two copy lines, one all_reduce per layer.
2. ``trace-fixed``: the same, fixed path: 0 copies per rank, the same collectives.
3. ``bench``: untraced A/B per rank at M = ``--bench-tokens`` (CUDA events, median of ``--steps`` x
   ``--rounds`` steps after ``--warmup``), ``--bench-layers`` layers.
4. ``trace-ideal``: ``copyhunt trace --device-trace`` of ``--ideal-steps`` baseline steps at each bench M
   (``--bench-layers`` layers): the copies' own device time per step and M per rank = the ideal saving;
   realized = saved / ideal.

    python benchmarks/gpu_tp_moe.py --out DIR     # GPU: 2 GPUs, NCCL; CPU: gloo, no device capture

Writes DIR/gpu_tp_moe.json (everything), DIR/<stage>/merged_table.txt, DIR/<stage>/log.txt. Exit 0 when
the per-rank copy and collective counts of both traced paths match, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import gpu_ranks  # noqa: E402  (the torchrun driver this one follows)

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "benchmarks" / "gpu_tp_moe_job.py"
SITES = ("experts-copy", "finalize-copy")


def torchrun_args(extra: list[str]) -> list[str]:
    return gpu_ranks.torchrun_args(2, extra, JOB)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "COLUMNS": "160"}


def traced(stage_dir: Path, job_args: list[str], cuda: bool, timeout: int) -> dict:
    """``copyhunt trace`` of the 2-rank job; returns rc, seconds, command, and the merged JSON."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    trace_file = stage_dir / "run.json"
    cmd = [sys.executable, "-m", "copyhunt", "trace", "-o", str(trace_file), "--device-trace" if cuda else "--no-device-trace",
           "-m", "torch.distributed.run", "--", *torchrun_args(job_args)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, cwd=stage_dir)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, so, se = 124, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), \
            (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    out = {"rc": rc, "seconds": round(time.perf_counter() - t0, 2), "command": " ".join(cmd[1:])}
    (stage_dir / "merged_table.txt").write_text(so)
    (stage_dir / "log.txt").write_text(so + "\n--- stderr ---\n" + se)
    print(so)
    if rc != 0:
        print(se[-4000:], file=sys.stderr)
    if trace_file.exists():
        from copyhunt.analysis.runs import load_run, merge_run
        from copyhunt.report.runs_table import run_to_json

        run = load_run([trace_file])
        out["merged"] = run_to_json(merge_run(run))
        out["members"] = run.members
    return out


def rank_rows(stage: dict, layers: int, steps_times_m: int, baseline: bool, cuda: bool) -> tuple[list[dict], bool]:
    """Per-rank counts of a traced stage against the job's arithmetic."""
    from copyhunt_moe.modular import copy_sites

    lines = {s.line for s in copy_sites().values() if s.name in SITES}
    rows, ok = [], stage.get("rc") == 0
    members = [m for m in stage.get("members", ()) if m.rank is not None]
    for m in members:
        every = m.trace.read_copies()
        # NCCL's own host-to-device copies (communicator set-up at the first collective: origin
        # 'device', seen only by device capture) are reported apart; the check is on the program's
        # own copies (origin 'dispatch').
        copies = [c for c in every if c.origin == "dispatch"]
        nccl: dict[str, dict] = {}
        for c in every:
            if c.origin == "dispatch":
                continue
            d = nccl.setdefault(f"{c.op} {c.kind}", {"count": 0, "bytes": 0, "device_us": 0.0})
            d["count"] += 1
            d["bytes"] += c.bytes
            d["device_us"] = round(d["device_us"] + (c.device.time_us if c.device is not None else 0.0), 3)
        kinds: dict[str, int] = {}
        for c in copies:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        at_sites = sum(1 for c in copies if c.site is not None and c.site.file.endswith("modular.py") and c.site.line in lines)
        colls = [o for o in m.trace.ops if o.op.startswith("c10d.")]
        want_copies = 2 * layers * steps_times_m if baseline else 0
        timed = [c for c in copies if c.device is not None]
        row = {"rank": m.rank, "pid": m.trace.meta.pid, "device": m.trace.meta.device, "copies": len(copies),
               "copies_by_kind": kinds, "at_modular_sites": at_sites, "expected_copies": want_copies,
               "collectives": len(colls), "expected_collectives": layers * steps_times_m,
               "timed_copies": len(timed), "device_us": round(sum(c.device.time_us for c in timed), 3) if timed else None,
               "complete": m.trace.meta.complete, "error": m.trace.meta.error,
               "all_copies": len(every), "non_dispatch_copies": nccl}
        row["match"] = (len(copies) == want_copies == at_sites and kinds in ({"d2d": want_copies}, {})
                        and row["collectives"] == row["expected_collectives"])
        ok = ok and row["match"] and row["complete"] and (not cuda or len(timed) == want_copies)
        rows.append(row)
    return rows, ok and len(rows) == 2


def ideal_per_rank(stage: dict, tokens: list[int], hidden: int, steps: int) -> dict:
    """Device time of the baseline copies per step, per M, per rank (copies told apart by their bytes)."""
    out: dict = {}
    for m in stage.get("members", ()):
        if m.rank is None:
            continue
        per_m = {}
        for t in tokens:
            nbytes = t * hidden * 2
            cs = [c for c in m.trace.read_copies()
                  if c.origin == "dispatch" and c.kind == "d2d" and c.bytes == nbytes and c.device is not None]
            times = [c.device.time_us for c in cs]
            per_m[str(t)] = {"copies": len(cs), "copies_per_step": len(cs) / steps,
                             "ideal_us_per_step": round(sum(times) / steps, 3) if times else None,
                             "median_copy_us": round(statistics.median(times), 3) if times else None}
        out[f"rank{m.rank}"] = per_m
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--layers", type=int, default=2, help="layers of the stored traces")
    ap.add_argument("--trace-tokens", type=int, default=8)
    ap.add_argument("--bench-layers", type=int, default=4)
    ap.add_argument("--bench-tokens", default="1,64,1024")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ideal-steps", type=int, default=3)
    ap.add_argument("--stages", default="trace-baseline,trace-fixed,bench,trace-ideal")
    ap.add_argument("--timeout", type=int, default=90, help="seconds per stage")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    tokens = [int(t) for t in args.bench_tokens.split(",")]
    summary: dict = {"device": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else "cpu",
                     "torch": torch.__version__, "cuda": torch.version.cuda, "args": {k: str(v) for k, v in vars(args).items()}}
    ok = True

    def save() -> None:
        (out / "gpu_tp_moe.json").write_text(json.dumps(summary, indent=1, default=str))

    for mode in ("baseline", "fixed"):
        if f"trace-{mode}" not in stages:
            continue
        st = traced(out / mode, ["--mode", mode, "--layers", str(args.layers), "--tokens", str(args.trace_tokens)],
                    cuda, args.timeout)
        rows, good = rank_rows(st, args.layers, 1, mode == "baseline", cuda)
        st.pop("members", None)
        st["ranks"] = rows
        st["ok"] = good
        ok = ok and good
        summary[f"trace_{mode}"] = st
        for r in rows:
            print(f"{mode} rank{r['rank']}: program copies {r['copies']} (expected {r['expected_copies']}, at the two modular "
                  f"sites {r['at_modular_sites']}), collectives {r['collectives']} (expected {r['expected_collectives']}), "
                  f"timed {r['timed_copies']}, device {r['device_us']} us, {'complete' if r['complete'] else r['error']}; "
                  f"all copies in the trace {r['all_copies']}, not from the program: {r['non_dispatch_copies']}")
        print(f"trace-{mode}: {'PASS' if good else 'FAIL'} ({st['seconds']} s)", flush=True)
        save()

    if "bench" in stages:
        bench_dir = out / "bench"
        cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(
            ["--mode", "bench", "--layers", str(args.bench_layers), "--tokens", args.bench_tokens, "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--out", str(bench_dir)])]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=args.timeout)
            rc, log = p.returncode, p.stdout + "\n--- stderr ---\n" + p.stderr
        except subprocess.TimeoutExpired:
            rc, log = 124, "timed out"
        bench_dir.mkdir(parents=True, exist_ok=True)
        (bench_dir / "log.txt").write_text(log)
        print(log[-3000:] if rc else "".join(ln + "\n" for ln in log.splitlines() if ln.startswith("rank")))
        b = {"rc": rc, "seconds": round(time.perf_counter() - t0, 2), "command": " ".join(cmd[1:])}
        for r in (0, 1):
            f = bench_dir / f"bench_rank{r}.json"
            if f.exists():
                b[f"rank{r}"] = json.loads(f.read_text())
        summary["bench"] = b
        save()

    if "trace-ideal" in stages:
        st = traced(out / "ideal", ["--mode", "baseline", "--layers", str(args.bench_layers), "--tokens", args.bench_tokens,
                                    "--steps", str(args.ideal_steps)], cuda, args.timeout)
        from copyhunt_moe.presets import PRESETS

        hidden = PRESETS["minimax-m2.5-tp4"].hidden if cuda else PRESETS["tiny"].hidden
        st["ideal"] = ideal_per_rank(st, tokens, hidden, args.ideal_steps)
        rows, good = rank_rows(st, args.bench_layers, args.ideal_steps * len(tokens), True, cuda)
        st.pop("members", None)
        st["ranks"] = rows
        st["ok"] = good
        summary["trace_ideal"] = st
        save()

    # A/B table with ideal and realized
    if "bench" in summary:
        print(f"{'rank':>4} {'M':>5} {'how':>6} {'baseline us':>12} {'fixed us':>9} {'saved us':>9} {'ideal us':>9} {'realized':>8}")
        ab = []
        for r in (0, 1):
            per = summary["bench"].get(f"rank{r}", {}).get("per_M", {})
            for m, v in per.items():
                ideal = summary.get("trace_ideal", {}).get("ideal", {}).get(f"rank{r}", {}).get(m, {}).get("ideal_us_per_step")
                for how, w in (("eager", v), ("graph", v.get("graph") or {})):
                    if "saved_us" not in w:
                        if w:
                            print(f"{r:>4} {m:>5} {how:>6} {w}")
                        continue
                    realized = round(w["saved_us"] / ideal, 2) if ideal else None
                    ab.append({"rank": r, "M": int(m), "how": how, **{k: x for k, x in w.items() if k != "graph"},
                               "ideal_us": ideal, "realized": realized})
                    print(f"{r:>4} {m:>5} {how:>6} {w['baseline_us']:>12.1f} {w['fixed_us']:>9.1f} {w['saved_us']:>9.1f} "
                          f"{'-' if ideal is None else f'{ideal:.1f}':>9} {'-' if realized is None else realized:>8}")
        summary["ab"] = ab
    summary["ok"] = ok
    save()
    print(f"{'PASS' if ok else 'FAIL'}; wrote {out / 'gpu_tp_moe.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
