"""rocprofv3 importers against the column spellings of rocprofiler-sdk's DOCUMENTED formats.

The CSV below follows the format of rocprofiler-sdk's own documentation sample
(ROCm/rocprofiler-sdk, source/docs/data/memory_copy_trace.csv, shown by
source/docs/how-to/using-rocprofv3.rst, commit a6af0d409217775fda5ae3ec46df5120ab9d794a): every header
and string field quoted, ``Direction`` spelled ``MEMORY_COPY_HOST_TO_DEVICE`` / ``MEMORY_COPY_DEVICE_TO_HOST``,
agents named ``"Agent 0"``, ns timestamps. The rows are our own numbers. The direction names in the
JSON ``strings.buffer_records[].operations`` table and in the rocpd ``memory_copies.name`` column are
the ``rocprofiler_memory_copy_operation_t`` names (``ROCPROFILER_MEMORY_COPY_HOST_TO_DEVICE``;
include/rocprofiler-sdk/fwd.h) without the ``ROCPROFILER_`` prefix; rocpd also writes
``MEMORY_COPY_PEER_TO_PEER``.
"""

from __future__ import annotations

import json
import sqlite3

from copyhunt.cli import main
from copyhunt.importers import load_any

DOCUMENTED_CSV = (
    '"Kind","Direction","Stream_Id","Source_Agent_Id","Destination_Agent_Id","Correlation_Id","Start_Timestamp","End_Timestamp"\n'
    '"MEMORY_COPY","MEMORY_COPY_HOST_TO_DEVICE",0,"Agent 0","Agent 4",1,1000000000000,1000000075000\n'
    '"MEMORY_COPY","MEMORY_COPY_DEVICE_TO_DEVICE",0,"Agent 4","Agent 4",2,1000000100000,1000000101500\n'
    '"MEMORY_COPY","MEMORY_COPY_DEVICE_TO_HOST",0,"Agent 4","Agent 0",3,1000000200000,1000000280000\n'
)


def test_documented_csv_ops_kinds_and_times(tmp_path):
    path = tmp_path / "1234_memory_copy_trace.csv"
    path.write_text(DOCUMENTED_CSV)
    t = load_any(path)
    # The op is the direction as written, never MEMORY_COPY_MEMORY_COPY_...
    assert [(c.op, c.kind) for c in t.copies] == [
        ("MEMORY_COPY_HOST_TO_DEVICE", "h2d"), ("MEMORY_COPY_DEVICE_TO_DEVICE", "d2d"), ("MEMORY_COPY_DEVICE_TO_HOST", "d2h"),
    ]
    assert [t.timings[i].time_us for i in range(3)] == [75.0, 1.5, 80.0]
    assert [t.timings[i].stream for i in range(3)] == [0, 0, 0]


def test_report_of_the_documented_csv_names_ops_and_the_file_rightly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")
    (tmp_path / "m.csv").write_text(DOCUMENTED_CSV)
    assert main(["report", "m.csv", "--by", "region", "--top", "0"]) == 0
    out = capsys.readouterr().out
    assert "MEMORY_COPY_MEMORY_COPY" not in out
    assert out.rstrip("\n").splitlines()[-1] == "imported from rocprofv3 CSV: m.csv"
    assert "trace file" not in out


def test_bare_and_enum_spellings_mean_the_same(tmp_path):
    # Older rocprofv3 CSVs wrote the bare direction; the SDK's enum names carry ROCPROFILER_.
    rows = ["HOST_TO_DEVICE", "ROCPROFILER_MEMORY_COPY_HOST_TO_DEVICE", "MEMORY_COPY_HOST_TO_DEVICE"]
    text = "Kind,Direction,Start_Timestamp,End_Timestamp\n" + "".join(f"MEMORY_COPY,{d},{i * 10},{i * 10 + 5}\n" for i, d in enumerate(rows))
    (tmp_path / "c.csv").write_text(text)
    assert {c.op for c in load_any(tmp_path / "c.csv").copies} == {"MEMORY_COPY_HOST_TO_DEVICE"}


def test_json_operation_names_from_the_strings_table(tmp_path):
    doc = {"rocprofiler-sdk-tool": [{
        "strings": {"buffer_records": [{"kind": "MEMORY_COPY", "operations": [
            "MEMORY_COPY_NONE", "MEMORY_COPY_HOST_TO_HOST", "MEMORY_COPY_HOST_TO_DEVICE",
            "MEMORY_COPY_DEVICE_TO_HOST", "MEMORY_COPY_DEVICE_TO_DEVICE"]}]},
        "buffer_records": {"memory_copy": [
            {"operation": 2, "start_timestamp": 100, "end_timestamp": 300, "bytes": 4096, "thread_id": 7,
             "correlation_id": {"internal": 1, "external": 0}, "src_agent_id": {"handle": 1}, "dst_agent_id": {"handle": 2}},
            {"operation": 4, "start_timestamp": 400, "end_timestamp": 450, "bytes": 512, "thread_id": 7,
             "correlation_id": {"internal": 2, "external": 0}, "src_agent_id": {"handle": 2}, "dst_agent_id": {"handle": 2}},
        ]},
    }]}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    t = load_any(tmp_path / "r.json")
    assert [(c.op, c.kind, c.bytes) for c in t.copies] == [
        ("MEMORY_COPY_HOST_TO_DEVICE", "h2d", 4096), ("MEMORY_COPY_DEVICE_TO_DEVICE", "d2d", 512),
    ]


def test_rocpd_names_including_peer_to_peer(tmp_path):
    db = tmp_path / "r.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE mc (name TEXT, region_name TEXT, start INT, end INT, size INT, stream_id INT, tid INT)")
    con.execute("CREATE VIEW memory_copies AS SELECT * FROM mc")
    con.executemany("INSERT INTO mc VALUES (?,?,?,?,?,?,?)", [
        ("MEMORY_COPY_HOST_TO_DEVICE", "", 0, 1000, 64, 0, 1),
        ("MEMORY_COPY_PEER_TO_PEER", "allreduce", 2000, 2500, 1024, 0, 1),
    ])
    con.commit()
    con.close()
    t = load_any(db)
    assert [(c.op, c.kind, c.bytes, c.region) for c in t.copies] == [
        ("MEMORY_COPY_HOST_TO_DEVICE", "h2d", 64, None), ("MEMORY_COPY_PEER_TO_PEER", "p2p", 1024, "allreduce"),
    ]
