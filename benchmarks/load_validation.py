"""What the load-time checks (copyhunt.validation, issue 18) cost: loading a synthetic trace with and
without them, in the same run. Prints a table and writes benchmarks/load_validation.json.

    PYTHONPATH=. python benchmarks/load_validation.py [--copies 20000] [--ops 200000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import factories  # noqa: E402
import copyhunt.tracefile as tracefile  # noqa: E402
from copyhunt.records import Access, OpRecord, StorageInfo  # noqa: E402
from copyhunt.validation import check_trace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=20_000)
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    site = factories.frame("/repo/model.py", 12, "forward")
    copies = [factories.copy(i, 4096, site=site, verdict="defensive-clone", reason="r", suggestion="s", us=1.0) for i in range(args.copies)]
    ops = tuple(OpRecord(i, "aten.add.Tensor", reads=(Access(i % 100, 0, 4096),), writes=(Access(i % 100 + 1, 0, 4096),)) for i in range(args.ops))
    trace = factories.trace(*copies, ops=ops, storages=tuple(StorageInfo(i, "cpu", 4096, False) for i in range(101)))
    with tempfile.TemporaryDirectory() as d:
        path = tracefile.save(trace, Path(d) / "t.json")
        size = path.stat().st_size
        checked, unchecked = [], []
        for r in range(args.rounds):  # interleaved A/B, the order alternating (the first load of a pair pays to free the last)
            for checks in ((True, False) if r % 2 == 0 else (False, True)):
                tracefile.check_trace = check_trace if checks else (lambda t: t)  # type: ignore[assignment]
                gc.collect()
                t0 = time.perf_counter()
                tracefile.load(path)
                (checked if checks else unchecked).append(time.perf_counter() - t0)
            tracefile.check_trace = check_trace
    a, b = statistics.median(checked), statistics.median(unchecked)
    print(f"{'file MB':>8} {'copies':>7} {'ops':>8} {'checked s':>10} {'unchecked s':>12} {'ratio':>6}")
    print(f"{size / 1e6:8.1f} {args.copies:7d} {args.ops:8d} {a:10.3f} {b:12.3f} {a / b:6.2f}")
    out = {"file_bytes": size, "copies": args.copies, "ops": args.ops, "rounds": args.rounds,
           "checked_s": a, "unchecked_s": b, "ratio": a / b}
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
