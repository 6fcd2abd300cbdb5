"""rocprofv3 importers (CSV, JSON, rocpd) on SYNTHETIC fixtures that follow the documented formats.

The fixtures (traces/rocprof-synthetic/, written by its make_fixtures.py) were not captured on AMD
hardware. Scenario: 2 MoE layers, each one H2D of 128 bytes and two D2D copies of 4*3072*2 = 24576
bytes, plus one blit copy kernel and one GEMM kernel (rocpd only).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from copyhunt.errors import TraceFormatError
from copyhunt.importers import load_any

FIX = Path(__file__).resolve().parent.parent / "traces" / "rocprof-synthetic"


def test_csv_kinds_times_and_missing_bytes_note() -> None:
    t = load_any(FIX / "memory_copy_trace.csv")
    assert [c.kind for c in t.copies] == ["h2d", "d2d", "d2d"] * 2
    # Durations from ns timestamps: 2000 ns, 2000 ns, 2500 ns.
    assert [t.timings[i].time_us for i in range(3)] == [2.0, 2.0, 2.5]
    assert all(c.bytes == 0 for c in t.copies)
    assert any("no byte counts" in n for n in t.meta.notes)
    assert t.meta.imported_from == "rocprofv3-csv"


def test_json_bytes_from_records() -> None:
    t = load_any(FIX / "results.json")
    assert [(c.kind, c.bytes) for c in t.copies] == [("h2d", 128), ("d2d", 24576), ("d2d", 24576)] * 2
    assert t.total_bytes == 2 * (128 + 2 * 24576)  # 98560
    assert all(c.site is None and c.origin == "imported" for c in t.copies)


def test_rocpd_regions_blit_kernels_and_gpu_time() -> None:
    t = load_any(FIX / "results.db")
    assert len(t.copies) == 8  # 6 memory copies + 2 blit copy kernels
    assert {c.region for c in t.copies} == {"decode/layer0/moe", "decode/layer1/moe"}
    blits = [c for c in t.copies if c.op == "__amd_rocclr_copyBuffer"]
    assert len(blits) == 2 and all(c.kind == "d2d" and c.bytes == 0 for c in blits)
    # GPU time = per layer copies 2 + 2 + 2.5 us, kernels 40 + 1 us = 47.5 us; 2 layers = 95 us.
    assert t.meta.gpu_time_us == pytest.approx(95.0)
    assert any("Python stacks" in n for n in t.meta.notes)


def test_sqlite_without_rocpd_views_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(TraceFormatError, match="memory_copies"):
        load_any(p)


def test_csv_with_bad_direction_names_the_row(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("Kind,Direction,Correlation_Id,Start_Timestamp,End_Timestamp\nMEMORY_COPY,SIDEWAYS,1,10,20\n")
    with pytest.raises(TraceFormatError, match=r"m.csv:2: malformed memory-copy row"):
        load_any(p)
