"""How judge() scales with trace size (CPU; pure analysis, no torch needed).

Two synthetic shapes, built from records directly:

- ``moe``: L MoE-like layers of ~40 ops; per layer one fresh result copied into a shared
  workspace and the workspace copied into a fresh output (the bundled demo's pattern), plus
  elementwise ops on fresh tensors. Copies are 2 of every ~40 ops.
- ``kv-slices``: one big buffer (a KV cache) receiving a copy into a distinct slice per step and
  read slice by slice later: the walks over that one storage are what SCAN_LIMIT bounds.

Prints a table and writes ``benchmarks/verdicts_scaling.json``.
Run: ``/work/venv/bin/python benchmarks/verdicts_scaling.py``
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from copyhunt.analysis import judge
from copyhunt.records import Access, CopyRecord, Frame, OpRecord, StorageInfo, Trace

SITE = Frame("bench.py", 1, "f")


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
    storages = [StorageInfo(0, "cpu", n, False)]
    sid = 1
    x = sid
    storages.append(StorageInfo(x, "cpu", n, True))
    sid += 1
    for _ in range(layers):
        prev = x
        for _ in range(36):  # elementwise chain on fresh tensors
            out = sid
            sid += 1
            storages.append(StorageInfo(out, "cpu", n, False))
            ops.append(OpRecord(len(ops), "aten.mul.Tensor", reads=(Access(prev, 0, n),), writes=(Access(out, 0, n),),
                                allocs=(out,), site=SITE))
            prev = out
        result, output = sid, sid + 1
        sid += 2
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
        # attention reads the filled part of the cache (one access per step, like a view of [0, step])
        ops.append(OpRecord(len(ops), "aten.bmm.default", reads=(Access(0, 0, (step + 1) * slot),), frees=(kv,), site=SITE))
    return Trace(copies=tuple(copies), ops=tuple(ops), storages=tuple(storages))


def _time(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls (the machine is shared: the minimum is the least noisy)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    rows = []
    cases = [("moe", moe_trace, n) for n in (62, 250, 1250, 2500)] + [("kv-slices", kv_trace, n) for n in (1000, 5000, 20000)]
    for name, make, size in cases:
        trace = make(size)
        t_judge = _time(lambda: judge(trace), repeats=5)
        judged = judge(trace)
        elim = sum(1 for c in judged.read_copies() if c.verdict != "needed")
        rows.append({"shape": name, "size": size, "ops": len(trace.ops), "copies": len(trace.copies),
                     "eliminable": elim, "judge_s": round(t_judge, 4),
                     "us_per_op": round(1e6 * t_judge / len(trace.ops), 2)})
    header = f"{'shape':<10} {'size':>6} {'ops':>8} {'copies':>7} {'elim':>6} {'judge s':>8} {'us/op':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['shape']:<10} {r['size']:>6} {r['ops']:>8} {r['copies']:>7} {r['eliminable']:>6} "
              f"{r['judge_s']:>8.3f} {r['us_per_op']:>6.2f}")
    out = Path(__file__).with_name("verdicts_scaling.json")
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
