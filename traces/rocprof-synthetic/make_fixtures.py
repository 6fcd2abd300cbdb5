"""Write SYNTHETIC rocprofv3 outputs (CSV, JSON, rocpd SQLite) following the documented formats.

Not captured on AMD hardware (none was available): the columns and record fields follow
ROCm/rocprofiler-sdk's documentation and tests (memory-copy CSV columns, the JSON
``rocprofiler-sdk-tool`` layout, the rocpd ``memory_copies`` / ``kernels`` views). The scenario is an
AITER-style MoE decode step of 2 layers at M=4 tokens, hidden 3072, bf16: per layer one H2D of the
routing ids (128 bytes) and two D2D copies of the M x 3072 output (4*3072*2 = 24576 bytes), plus
one blit copy kernel and one GEMM kernel. Run: ``python traces/rocprof-synthetic/make_fixtures.py``.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent
T0 = 1_000_000_000  # ns
OUT_BYTES = 4 * 3072 * 2

# (direction, start_ns, end_ns, bytes, region)
COPIES = []
KERNELS = []  # (name, start, end, region)
for layer in range(2):
    base = T0 + layer * 100_000
    region = f"decode/layer{layer}/moe"
    COPIES.append(("HOST_TO_DEVICE", base, base + 2_000, 128, region))
    KERNELS.append(("fused_moe_gemm_kernel", base + 5_000, base + 45_000, region))
    COPIES.append(("DEVICE_TO_DEVICE", base + 46_000, base + 48_000, OUT_BYTES, region))  # copy #1
    COPIES.append(("DEVICE_TO_DEVICE", base + 49_000, base + 51_500, OUT_BYTES, region))  # copy #2
    KERNELS.append(("__amd_rocclr_copyBuffer", base + 52_000, base + 53_000, region))
OPS = ["MEMORY_COPY_NONE", "MEMORY_COPY_HOST_TO_HOST", "MEMORY_COPY_HOST_TO_DEVICE", "MEMORY_COPY_DEVICE_TO_HOST", "MEMORY_COPY_DEVICE_TO_DEVICE"]


def write_csv() -> None:
    cols = ["Kind", "Direction", "Stream_Id", "Source_Agent_Id", "Destination_Agent_Id", "Correlation_Id", "Start_Timestamp", "End_Timestamp"]
    with open(HERE / "memory_copy_trace.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i, (d, s, e, _b, _r) in enumerate(COPIES):
            src, dst = (0, 1) if d == "HOST_TO_DEVICE" else (1, 1)
            w.writerow(["MEMORY_COPY", d, 1, src, dst, 100 + i, s, e])


def write_json() -> None:
    recs = []
    for i, (d, s, e, b, _r) in enumerate(COPIES):
        src, dst = (0, 1) if d == "HOST_TO_DEVICE" else (1, 1)
        recs.append({
            "size": 88, "kind": 11, "operation": OPS.index(f"MEMORY_COPY_{d}"),
            "correlation_id": {"internal": 100 + i, "external": 0}, "start_timestamp": s, "end_timestamp": e,
            "thread_id": 4242, "dst_agent_id": {"handle": dst}, "src_agent_id": {"handle": src}, "bytes": b,
        })
    doc = {"rocprofiler-sdk-tool": [{
        "metadata": {"pid": 4242, "note": "SYNTHETIC fixture written by make_fixtures.py, not captured on AMD hardware"},
        "agents": [{"id": {"handle": 0}, "type": 1, "name": "CPU"}, {"id": {"handle": 1}, "type": 2, "name": "gfx942"}],
        "strings": {"buffer_records": [{"kind": "MEMORY_COPY", "operations": OPS}]},
        "buffer_records": {"memory_copy": recs, "kernel_dispatch": []},
    }]}
    (HERE / "results.json").write_text(json.dumps(doc, indent=1) + "\n")


def write_rocpd() -> None:
    path = HERE / "results.db"
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    # Tables named like the documented views, with the columns the importer reads (a subset).
    con.execute(
        "CREATE TABLE memory_copies (id INTEGER, guid TEXT, category TEXT, nid INTEGER, pid INTEGER, tid INTEGER,"
        " start INTEGER, end INTEGER, duration INTEGER, name TEXT, region_name TEXT, stream_id INTEGER, queue_id INTEGER,"
        " stream_name TEXT, queue_name TEXT, size INTEGER, dst_device TEXT, dst_address INTEGER, src_device TEXT,"
        " src_address INTEGER, stack_id INTEGER, parent_stack_id INTEGER, correlation_id INTEGER)"
    )
    con.execute(
        "CREATE TABLE kernels (id INTEGER, guid TEXT, tid INTEGER, start INTEGER, end INTEGER, duration INTEGER,"
        " name TEXT, kernel_name TEXT, region_name TEXT, stream_id INTEGER, correlation_id INTEGER)"
    )
    for i, (d, s, e, b, r) in enumerate(COPIES):
        con.execute(
            "INSERT INTO memory_copies VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (i, "synthetic", "MEMORY_COPY", 0, 4242, 4242, s, e, e - s, f"MEMORY_COPY_{d}", r, 1, 1, "stream 1", "queue 1",
             b, "gfx942" if d != "DEVICE_TO_HOST" else "CPU", 0, "CPU" if d == "HOST_TO_DEVICE" else "gfx942", 0, 0, 0, 100 + i),
        )
    for i, (n, s, e, r) in enumerate(KERNELS):
        con.execute("INSERT INTO kernels VALUES (?,?,?,?,?,?,?,?,?,?,?)", (i, "synthetic", 4242, s, e, e - s, n, n, r, 1, 200 + i))
    con.commit()
    con.close()


if __name__ == "__main__":
    write_csv()
    write_json()
    write_rocpd()
