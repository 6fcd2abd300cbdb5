"""How fast a Ctrl-C saves a long run: `copyhunt trace` of an endless loop, SIGINT once N iterations ran.

    PYTHONPATH=. python benchmarks/interrupt_latency.py [--iters 5000 20000] [--out benchmarks/interrupt_latency.json]

Per N (each iteration: one clone of a "hot" tensor every op reads, plus one add), three timings from
the first SIGINT: the raw trace on disk (``meta.pending`` = verdicts), and the process gone when a
second SIGINT follows the raw file at once (the analysis is stopped), against the process gone when
the analysis is left to finish. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from copyhunt.tracefile import load

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = """\
import sys, time
from pathlib import Path
import torch
hot = torch.ones(64)
n = int(sys.argv[2])
for i in range(n):
    c = hot.clone()
    hot.add_(0)
Path(sys.argv[1]).touch()
while True:
    time.sleep(0.01)
"""


def _run(n: int, second: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "loop.py").write_text(PROGRAM)
        env = {k: v for k, v in os.environ.items() if k != "COPYHUNT_TEST_HOLD"}
        env["PYTHONPATH"] = str(ROOT)
        env["CI"] = "1"
        proc = subprocess.Popen([sys.executable, "-m", "copyhunt", "trace", "--no-device-trace", "loop.py", "-o", "t.json",
                                 "--", str(d / "ready"), str(n)], cwd=d, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (d / "ready").exists():
            if proc.poll() is not None:
                raise SystemExit(f"copyhunt exited {proc.returncode} early")
            time.sleep(0.01)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        while not (d / "t.json").exists():
            time.sleep(0.005)
        t_saved = time.perf_counter() - t0
        if second:
            proc.send_signal(signal.SIGINT)
        proc.wait()
        t_exit = time.perf_counter() - t0
        doc = json.loads((d / "t.json").read_text())
        trace = load(d / "t.json")  # ops are stored column-wise from copyhunt.trace/3 on: count them loaded
        return {"saved_s": round(t_saved, 3), "exit_s": round(t_exit, 3), "copies": len(trace.copies),
                "ops": len(trace.ops), "pending": doc["meta"].get("pending"), "rc": proc.returncode,
                "bytes": (d / "t.json").stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--finish-up-to", type=int, default=1000,
                    help="also time the analysis left to finish, for N up to this (it is the slow part)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "interrupt_latency.json"))
    args = ap.parse_args()
    rows = []
    for n in args.iters:
        stop = _run(n, second=True)
        full = _run(n, second=False) if n <= args.finish_up_to else None
        rows.append({"iters": n, "stop_analysis": stop, "let_it_finish": full})
    print(f"{'iters':>7} {'copies':>7} {'ops':>7} {'raw saved s':>12} {'2nd Ctrl-C exit s':>18} {'pending':>12} {'finish exit s':>14} {'pending':>8}")
    for r in rows:
        s, f = r["stop_analysis"], r["let_it_finish"] or {"exit_s": "-", "pending": "-"}
        print(f"{r['iters']:>7} {s['copies']:>7} {s['ops']:>7} {s['saved_s']:>12} {s['exit_s']:>18} {str(s['pending']):>12} {f['exit_s']:>14} {str(f['pending']):>8}")
    doc = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(), "rows": rows}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
