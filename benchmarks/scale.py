"""Long runs (issue 12): capture, judge, save and load from 1k to 1M ops, three access patterns.

Each pattern is a loop of tiny CPU tensor ops, ``ops`` ops in all, traced with ``copyhunt.hunt()``:

- ``fresh``: every 10th op clones a tensor just made (an elementwise chain on fresh tensors).
- ``hot``: one tensor every op reads; every 10th op clones it (its timeline holds every op).
- ``copies``: every op clones the same tensor (many copies of one storage: ``many.py`` of the issue).

For each size it measures, in one process and in CPU seconds (``time.process_time``: the machine is
shared, and CPU time is what another job cannot inflate), the loop untraced, the traced loop (capture), ``judge``,
``save`` and ``load`` of the judged trace (the file's format: ``copyhunt.tracefile``), the file's bytes
per op, and the memory ``load`` allocated at its peak (tracemalloc, a separate load) against the file
size. Time per op must stay flat as the trace grows; judging must never cost more than the capture.

Two synthetic verdict-only shapes built from records (no torch; formerly ``verdicts_scaling.py``) add
what the loops cannot: ``moe`` (a workspace reused by every layer) and ``kv-slices`` (a KV cache
written slice by slice and read whole each step: the segment tree's case).

    python benchmarks/scale.py                         # 1k, 10k, 100k ops; writes benchmarks/scale.json
    python benchmarks/scale.py --sizes 1000000 --patterns fresh,hot --out /tmp/scale_1m.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import torch

from copyhunt import hunt
from copyhunt.analysis import judge
from copyhunt.records import Access, CopyRecord, Frame, OpRecord, StorageInfo, Trace
from copyhunt.tracefile import load, save

PATTERNS = ("fresh", "hot", "copies")
SITE = Frame("bench.py", 1, "f")


def loop(pattern: str, ops: int) -> Callable[[], None]:
    """The program: ``ops`` dispatcher ops of the pattern on 16-element tensors."""
    torch.manual_seed(0)
    hot = torch.randn(16)

    def fresh() -> None:
        x = hot
        for k in range(ops):
            x = x.clone() if k % 10 == 9 else x * 1.0001

    def hot_reads() -> None:
        for k in range(ops):
            y = hot.clone() if k % 10 == 9 else hot * 1.0001
        del y

    def copies() -> None:
        for _ in range(ops):
            y = hot.clone()
        del y

    return {"fresh": fresh, "hot": hot_reads, "copies": copies}[pattern]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def measure(pattern: str, ops: int, folder: Path) -> dict[str, Any]:
    """One row: the pattern at ``ops`` ops."""
    program = loop(pattern, ops)
    program()  # warm up the allocator and the ops
    untraced, _ = _timed(program)
    gc.collect()

    def traced() -> Trace:
        with hunt() as h:
            program()
        return h.trace

    capture, trace = _timed(traced)
    gc.disable()  # as judge does: the records are many small acyclic objects
    try:
        judging, judged = _timed(lambda: judge(trace))
    finally:
        gc.enable()
    del trace
    path = folder / f"{pattern}-{ops}.json"
    saving, _ = _timed(lambda: save(judged, path, overwrite=True))
    n_ops, n_copies = len(judged.ops), len(judged.copies)
    elim = sum(1 for c in judged.read_copies() if c.verdict != "needed")
    del judged
    gc.collect()
    loading, back = _timed(lambda: load(path))
    assert len(back.ops) == n_ops and len(back.copies) == n_copies
    del back
    gc.collect()
    tracemalloc.start()
    again = load(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del again
    size = path.stat().st_size
    path.unlink()
    return {
        "pattern": pattern, "ops": n_ops, "copies": n_copies, "eliminable": elim,
        "untraced_s": round(untraced, 4), "capture_s": round(capture, 3), "judge_s": round(judging, 3),
        "save_s": round(saving, 3), "load_s": round(loading, 3), "file_bytes": size,
        "bytes_per_op": round(size / n_ops, 1), "load_peak_bytes": peak, "load_ram_x_file": round(peak / size, 2),
        "capture_us_per_op": round(1e6 * capture / n_ops, 1), "judge_us_per_op": round(1e6 * judging / n_ops, 1),
        "judge_x_capture": round(judging / capture, 3), "traced_x_untraced": round((capture + judging) / untraced, 1),
    }


# --- synthetic verdict-only shapes (no capture) --------------------------------------------------


def _copy(seq: int, src: int, dst: int, nbytes: int) -> CopyRecord:
    return CopyRecord(seq=seq, op="aten.copy_.default", kind="d2d", bytes=nbytes, noop=False, src_device="cpu",
                      dst_device="cpu", shape=(nbytes // 2,), dtype="torch.bfloat16", site=SITE,
                      src_dtype="torch.bfloat16", src_contiguous=True, dst_contiguous=True,
                      src_storage=src, dst_storage=dst)


def moe_trace(layers: int) -> Trace:
    """~40 ops per layer, 2 copies per layer through one shared workspace (storage 0)."""
    n = 6144  # one M x K bf16 output of 1 token x 3072
    ops: list[OpRecord] = []
    copies: list[CopyRecord] = []
    storages = [StorageInfo(0, "cpu", n, False), StorageInfo(1, "cpu", n, True)]
    sid, x = 2, 1
    for _ in range(layers):
        prev = x
        for _ in range(36):  # elementwise chain on fresh tensors
            out, sid = sid, sid + 1
            storages.append(StorageInfo(out, "cpu", n, False))
            ops.append(OpRecord(len(ops), "aten.mul.Tensor", reads=(Access(prev, 0, n),), writes=(Access(out, 0, n),),
                                allocs=(out,), site=SITE))
            prev = out
        result, output, sid = sid, sid + 1, sid + 2
        storages += [StorageInfo(result, "cpu", n, False), StorageInfo(output, "cpu", n, False)]
        ops.append(OpRecord(len(ops), "aten.empty.memory_format", writes=(Access(output, 0, n),), allocs=(output,), site=SITE))
        ops.append(OpRecord(len(ops), "aten.sum.IntList_out", reads=(Access(prev, 0, n),), writes=(Access(result, 0, n),),
                            allocs=(result,), site=SITE))
        seq = len(ops)
        ops.append(OpRecord(seq, "aten.copy_.default", reads=(Access(result, 0, n),), writes=(Access(0, 0, n),), is_copy=True, site=SITE))
        copies.append(_copy(seq, result, 0, n))
        seq = len(ops)
        ops.append(OpRecord(seq, "aten.copy_.default", reads=(Access(0, 0, n),), writes=(Access(output, 0, n),),
                            frees=(result,), is_copy=True, site=SITE))
        copies.append(_copy(seq, 0, output, n))
        x = output
    return Trace(copies=tuple(copies), ops=tuple(ops), storages=tuple(storages))


def kv_trace(steps: int) -> Trace:
    """One cache (storage 0) gets a fresh slice per step; every step also reads all earlier slices once."""
    slot = 256
    ops: list[OpRecord] = []
    copies: list[CopyRecord] = []
    storages = [StorageInfo(0, "cpu", slot * steps, True)]
    for step in range(steps):
        kv = step + 1
        storages.append(StorageInfo(kv, "cpu", slot, False))
        ops.append(OpRecord(len(ops), "aten.mm.default", writes=(Access(kv, 0, slot),), allocs=(kv,), site=SITE))
        seq = len(ops)
        ops.append(OpRecord(seq, "aten.copy_.default", reads=(Access(kv, 0, slot),), writes=(Access(0, step * slot, slot),),
                            is_copy=True, site=SITE))
        copies.append(_copy(seq, kv, 0, slot))
        ops.append(OpRecord(len(ops), "aten.bmm.default", reads=(Access(0, 0, (step + 1) * slot),), frees=(kv,), site=SITE))
    return Trace(copies=tuple(copies), ops=tuple(ops), storages=tuple(storages))


def synthetic(ops: int) -> list[dict[str, Any]]:
    """judge() alone on the record-built shapes of about ``ops`` ops."""
    rows = []
    for name, make, size in (("moe", moe_trace, max(1, ops // 40)), ("kv-slices", kv_trace, max(1, ops // 3))):
        trace = make(size)
        judging, judged = _timed(lambda: judge(trace))
        elim = sum(1 for c in judged.read_copies() if c.verdict != "needed")
        rows.append({"shape": name, "ops": len(trace.ops), "copies": len(trace.copies), "eliminable": elim,
                     "judge_s": round(judging, 3), "judge_us_per_op": round(1e6 * judging / len(trace.ops), 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="op counts, comma-separated")
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--out", default=str(Path(__file__).with_name("scale.json")))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    patterns = [p for p in args.patterns.split(",") if p]
    rows: list[dict[str, Any]] = []
    with hunt():
        loop("fresh", 100)()  # the first hunt imports and warms up the capture: not part of any row
    with tempfile.TemporaryDirectory() as tmp:
        for ops in sizes:
            for pattern in patterns:
                row = measure(pattern, ops, Path(tmp))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    shapes = [r for ops in sizes for r in synthetic(ops)]
    cols = [("pattern", 7), ("ops", 8), ("copies", 7), ("elim", 6), ("untraced s", 10), ("capture s", 9),
            ("judge s", 8), ("save s", 7), ("load s", 7), ("B/op", 6), ("load RAM/file", 13), ("cap us/op", 9),
            ("judge us/op", 11), ("judge/cap", 9), ("traced/untraced", 15)]
    keys = ["pattern", "ops", "copies", "eliminable", "untraced_s", "capture_s", "judge_s", "save_s", "load_s",
            "bytes_per_op", "load_ram_x_file", "capture_us_per_op", "judge_us_per_op", "judge_x_capture", "traced_x_untraced"]
    print(" | ".join(f"{name:>{w}}" for name, w in cols))
    for r in rows:
        print(" | ".join(f"{r[k]!s:>{w}}" for k, (_, w) in zip(keys, cols)))
    print()
    print(f"{'shape':>9} | {'ops':>8} | {'copies':>7} | {'elim':>6} | {'judge s':>8} | {'judge us/op':>11}")
    for r in shapes:
        print(f"{r['shape']:>9} | {r['ops']:>8} | {r['copies']:>7} | {r['eliminable']:>6} | {r['judge_s']:>8} | {r['judge_us_per_op']:>11}")
    worst = max((r["judge_x_capture"] for r in rows), default=0.0)
    print(f"\nworst judge/capture: {worst} (target <= 1)")
    Path(args.out).write_text(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
        "torch": torch.__version__, "command": "python benchmarks/scale.py " + " ".join(argv or sys.argv[1:]),
        "rows": rows, "synthetic": shapes}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
