"""Runs of several processes, read side: loading a run folder, merging by site, the merged table and
JSON, ``--rank``, diff folder to folder, gate budgets per rank and in total. Hand-built traces with
the arithmetic in comments; the end-to-end runs (fork/spawn pools, torchrun) are in test_multiprocess.py."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from copyhunt.analysis.runs import Member, Run, combined_trace, load_run, merge_run
from copyhunt.cli import main
from copyhunt.errors import TraceFormatError
from copyhunt.follow import KILLED, claim, python_child_args, run_folder_for
from copyhunt.records import Access, Frame, OpRecord, TraceMeta
from copyhunt.report.runs_table import render_run_table, run_to_json
from copyhunt.tracefile import load, save
from factories import copy, trace

F7 = Frame("model.py", 7, "forward")
F9 = Frame("model.py", 9, "forward")
F12 = Frame("model.py", 12, "step")


@pytest.fixture(autouse=True)
def _fixed_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")


def _allreduce(seq: int, nbytes: int) -> OpRecord:
    return OpRecord(seq, "c10d.allreduce_.default", reads=(Access(0, 0, nbytes),), site=F12)


def rank_traces():
    """rank0: 2 clones of 64 B at model.py:7 (1.5 us each), 1 all_reduce of 256 B.
    rank1: 3 clones of 64 B at model.py:7 (2.0 us each), 1 h2d of 1024 B at model.py:9 (4.0 us), 2 all_reduces;
    rank1 was stopped by SIGTERM. The parent (the torchrun agent) copied nothing."""
    r0 = trace(*[copy(i, 64, site=F7, op="aten.clone.default", us=1.5, verdict="needed") for i in range(2)],
               meta=TraceMeta(target="train.py", pid=101, parent_pid=100, rank=0, world_size=2, local_rank=0, device="cuda:0 H200"),
               ops=(_allreduce(5, 256),))
    r1 = trace(*[copy(i, 64, site=F7, op="aten.clone.default", us=2.0, verdict="needed") for i in range(3)],
               copy(4, 1024, site=F9, op="aten._to_copy.default", kind="h2d", dst_device="cuda:0", us=4.0, verdict="dead-store"),
               meta=TraceMeta(target="train.py", pid=102, parent_pid=100, rank=1, world_size=2, local_rank=1, device="cuda:0 H200",
                              complete=False, error="terminated (SIGTERM)"),
               ops=(_allreduce(6, 256), _allreduce(7, 256)))
    parent = trace(meta=TraceMeta(target="-m torch.distributed.run", pid=100, parent_pid=1,
                                  children=("run/rank0.json", "run/rank1.json")), judged=True)
    return parent, r0, r1


def hand_run() -> Run:
    parent, r0, r1 = rank_traces()
    return Run((Member("parent", "run.json", parent), Member("rank0", "run/rank0.json", r0), Member("rank1", "run/rank1.json", r1)), "run.json")


def saved_run(folder: Path) -> Path:
    """The hand-built run saved as `copyhunt trace` lays it out: run.json next to run/rank0.json, run/rank1.json."""
    parent, r0, r1 = rank_traces()
    save(r0, folder / "run" / "rank0.json")
    save(r1, folder / "run" / "rank1.json")
    save(parent, folder / "run.json")
    return folder / "run.json"


GOLDEN = """\
run: run.json
3 processes, 6 copies, 1.3 KiB written

Process   Pid   Rank   Device        Copies     Bytes   Dev us   Status                             
────────────────────────────────────────────────────────────────────────────────────────────────────
parent    100      -   cpu                0       0 B        -   complete                           
rank0     101    0/2   cuda:0 H200        2     128 B      3.0   complete                           
rank1     102    1/2   cuda:0 H200        4   1.2 KiB     10.0   INCOMPLETE: terminated (SIGTERM)   

Site                    Op         Kind   parent        rank0        rank1   Total     Bytes   Imbal
────────────────────────────────────────────────────────────────────────────────────────────────────
model.py:9 forward      _to_copy   h2d         0            0   1 (4.0 us)       1   1.0 KiB     inf
model.py:7 forward      clone      d2d         0   2 (3.0 us)   3 (6.0 us)       5     320 B    1.50

collective calls (not copies):
Site                                        Op                parent   rank0   rank1   Calls   Bytes
────────────────────────────────────────────────────────────────────────────────────────────────────
model.py:12 step                            c10d.allreduce_        0       1       2       3   768 B
"""


def test_merged_table_golden_text():
    # rank1: 3*64 + 1024 = 1216 B (1.2 KiB), 3*2.0 + 4.0 = 10.0 us; clone imbalance 3/2 = 1.50, h2d 1/0 = inf;
    # all_reduce: 3 calls of 256 B = 768 B, a row of its own and in no copy count.
    console = Console(width=100, file=io.StringIO())
    render_run_table(merge_run(hand_run()), console)
    assert console.file.getvalue() == GOLDEN


def test_merged_json_carries_the_per_process_breakdown():
    doc = run_to_json(merge_run(hand_run()))
    assert doc["schema"] == "copyhunt.run/1"
    assert (doc["copies"], doc["bytes"]) == (6, 128 + 1216)
    assert [(p["label"], p["pid"], p["rank"], p["copies"], p["bytes"], p["device_us"], p["collectives"], p["complete"])
            for p in doc["processes"]] == [
        ("parent", 100, None, 0, 0, None, 0, True),
        ("rank0", 101, 0, 2, 128, 3.0, 1, True),
        ("rank1", 102, 1, 4, 1216, 10.0, 2, False),
    ]
    h2d, clone = doc["sites"]
    assert (h2d["line"], h2d["kind"], h2d["count"], h2d["imbalance"], h2d["eliminable"]) == (9, "h2d", 1, "inf", 1)
    assert clone["per_process"] == {
        "parent": {"count": 0, "bytes": 0, "device_us": None},
        "rank0": {"count": 2, "bytes": 128, "device_us": 3.0},
        "rank1": {"count": 3, "bytes": 192, "device_us": 6.0},
    }
    assert (clone["imbalance"], clone["device_us"]) == (1.5, 9.0)
    (ar,) = doc["collectives"]
    assert (ar["op"], ar["count"], ar["bytes"], ar["per_process"]["rank1"]["count"]) == ("c10d.allreduce_.default", 3, 768, 2)
    json.dumps(doc)  # plain JSON values only


def test_imbalance_needs_two_ranks():
    parent, r0, _ = rank_traces()
    merged = merge_run(Run((Member("parent", "p", parent), Member("rank0", "r0", r0)), "x"))
    assert merged.imbalance(merged.rows[0]) is None
    assert math.isinf(merge_run(hand_run()).imbalance(merge_run(hand_run()).rows[0]))


def test_combined_trace_rekeys_timings_and_findings():
    both = combined_trace(hand_run())
    assert len(both.copies) == 6
    read = both.read_copies()
    assert [c.device.time_us for c in read] == [1.5, 1.5, 2.0, 2.0, 2.0, 4.0]
    assert [c.verdict for c in read] == ["needed"] * 5 + ["dead-store"]
    assert not both.meta.complete and both.meta.error == "rank1: terminated (SIGTERM)"


def test_load_run_from_the_parent_file_or_the_folder_gives_the_same_members(tmp_path):
    parent_file = saved_run(tmp_path)
    by_file = load_run([parent_file])
    by_folder = load_run([tmp_path / "run"])
    assert [m.label for m in by_file.members] == ["parent", "rank0", "rank1"]
    assert [m.label for m in by_folder.members] == ["parent", "rank0", "rank1"]
    assert [len(m.trace.copies) for m in by_folder.members] == [0, 2, 4]
    files = load_run([tmp_path / "run" / "rank1.json", tmp_path / "run" / "rank0.json"])
    assert [m.label for m in files.members] == ["rank0", "rank1"]


def test_report_folder_prints_the_merged_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    assert main(["report", "run.json"]) == 0
    out = capsys.readouterr().out
    assert out == GOLDEN
    assert main(["report", "run"]) == 0
    assert capsys.readouterr().out == GOLDEN.replace("run: run.json", "run: run")


def test_report_rank_shows_one_process_and_json_the_breakdown(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    assert main(["report", "run", "--rank", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 copies, 1.2 KiB written" in out and "trace file: run/rank1.json" in out
    assert main(["report", "run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in doc["processes"]] == ["parent", "rank0", "rank1"]
    assert main(["report", "run", "--rank", "5"]) == 2
    assert capsys.readouterr().err == "copyhunt: error: run: no trace of rank 5 (ranks: 0, 1)\n"


def test_diff_folder_to_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    # B: rank1 lost its h2d copy.
    parent, r0, r1 = rank_traces()
    from dataclasses import replace

    save(r0, tmp_path / "b" / "rank0.json")
    save(replace(r1, copies=r1.copies[:3], timings={i: t for i, t in r1.timings.items() if i < 3},
                 findings={i: f for i, f in r1.findings.items() if i < 3}), tmp_path / "b" / "rank1.json")
    assert main(["diff", "run", "b", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    removed = [s for s in doc["sites"] if s["status"] == "removed"]
    assert [(s["line"], s["a"]["count"], s["b"]["count"]) for s in removed] == [(9, 1, 0)]
    assert (doc["totals"]["a"]["count"], doc["totals"]["b"]["count"]) == (6, 5)
    assert main(["diff", "run", "b", "--rank", "0", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["sites"] == []  # rank0 did not change


def test_gate_folder_per_rank_and_total_budgets(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    # The run has an incomplete rank: the gate gives no verdict on half a run (exit 3, one line).
    Path("total.toml").write_text('[[rules]]\nmax_copies = 6\n')
    assert main(["gate", "run", "-b", "total.toml"]) == 3
    assert capsys.readouterr().err == (
        "copyhunt: error: run: the trace is incomplete (rank1: terminated (SIGTERM)); no verdict on half a run\n")
    r1 = load(Path("run/rank1.json"))
    save(replace(r1, meta=replace(r1.meta, complete=True, error=None)), "run/rank1.json", overwrite=True)
    # Per rank: rank0 makes 2 copies, rank1 4; the whole run 6.
    Path("per_rank.toml").write_text('[[rules]]\nname = "clones"\nmax_copies = 3\nper = "rank"\n')
    assert main(["gate", "run", "-b", "per_rank.toml"]) == 1
    out = capsys.readouterr().out
    assert "x rank1: clones (all copies): 4 copies, over the limit of 3" in out
    assert "ok    rank0: clones" in out and "x rank0: clones" not in out  # checked, within budget
    assert main(["gate", "run", "-b", "total.toml"]) == 0
    capsys.readouterr()
    Path("total.toml").write_text('[[rules]]\nmax_copies = 5\n')
    assert main(["gate", "run.json", "-b", "total.toml"]) == 1
    assert "6 copies, over the limit of 5" in capsys.readouterr().out


def test_claim_leaves_a_readable_placeholder_and_never_takes_a_name_twice(tmp_path):
    facts = {"pid": 7, "parent_pid": 1, "rank": 1, "world_size": 2, "local_rank": 1}
    first = claim(tmp_path, facts, "train.py")
    second = claim(tmp_path, facts, "train.py")  # a child of rank 1 that inherited RANK
    assert (first.name, second.name) == ("rank1.json", "rank1.pid7.json")
    t = load(first)
    assert (t.meta.complete, t.meta.error, t.meta.rank, t.copies) == (False, KILLED, 1, ())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert claim(tmp_path, {**facts, "rank": None, "pid": 9}, "x").name == "pid9.json"


@pytest.mark.parametrize(("args", "expected"), [
    (["python", "train.py", "--lr", "1"], ["python", "-m", "copyhunt._child", "train.py", "--lr", "1"]),
    (["/usr/bin/python3.11", "-u", "train.py"], ["/usr/bin/python3.11", "-u", "-m", "copyhunt._child", "train.py"]),
    (["python3", "-X", "dev", "-m", "pkg.mod", "a"], ["python3", "-X", "dev", "-m", "copyhunt._child", "-m", "pkg.mod", "a"]),
    (["python", "-c", "print(1)"], ["python", "-m", "copyhunt._child", "-c", "print(1)"]),
    (["python", "-I", "train.py"], None),  # isolated mode: left alone
    (["python"], None),  # an interactive interpreter
    (["python", "-"], None),  # a program on stdin
    (["gcc", "a.c"], None),
    ("python train.py", None),  # a shell string
])
def test_python_child_args(args, expected):
    assert python_child_args(args) == expected


def test_run_folder_names():
    assert run_folder_for("copyhunt-train.123.json") == Path("copyhunt-train.123")
    assert run_folder_for("out/trace") == Path("out/trace.children")


def test_folder_without_traces_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"copyhunt: error: {tmp_path / 'empty'}: a folder without trace files (*.json)\n"


def test_p2p_copies_show_both_devices():
    from copyhunt.report.table import render_table
    from copyhunt.view import view

    t = trace(copy(0, 4096, site=F7, op="aten._to_copy.default", kind="p2p", src_device="cuda:0", dst_device="cuda:1"),
              meta=TraceMeta(target="tp.py", device="cuda:0"))
    console = Console(width=100, file=io.StringIO())
    render_table(view(t), console)
    row = next(line for line in console.file.getvalue().splitlines() if "model.py:7" in line)
    assert row.split()[:5] == ["model.py:7", "forward", "_to_copy", "p2p", "cuda:0>cuda:1"]


def test_a_real_collective_is_a_row_of_its_own_and_no_copy(monkeypatch):
    # A one-process gloo group: all_reduce and all_gather reach the dispatch mode as c10d ops.
    import socket

    import torch
    import torch.distributed as dist

    import copyhunt
    from copyhunt.analysis.runs import collective_bytes, collective_calls

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        x = torch.ones(4)
        with copyhunt.hunt() as h:
            y = x.clone()  # 16 B; all_reduce then writes y in place: an alias of x would not do
            dist.all_reduce(y)
            out = [torch.empty(4)]
            dist.all_gather(out, x)  # input 16 B (the op record lists the input; the output list is nested)
            z = y + x
    finally:
        dist.destroy_process_group()
    assert [(c.op, c.verdict) for c in h.copies] == [("aten.clone.default", "needed")]
    calls = collective_calls(h.trace)
    assert [(o.op, collective_bytes(o)) for o in calls] == [("c10d.allreduce_.default", 16), ("c10d.allgather_.default", 16)]
    member = Member("rank0", "r0.json", h.trace)
    merged = merge_run(Run((member,), "x"))
    assert [(r.key.op, r.count) for r in merged.rows] == [("aten.clone.default", 1)]
    assert sorted((r.key.op, r.count, r.bytes) for r in merged.collectives) == [
        ("c10d.allgather_.default", 1, 16), ("c10d.allreduce_.default", 1, 16)]
    assert float(z[0]) == 2.0  # the traced program computed what it computes untraced


def test_the_compilers_helper_processes_are_not_followed(tmp_path, monkeypatch):
    # A child started from torch/_inductor (compile workers, ISA probes) runs none of the program's code.
    from copyhunt import follow

    fake = tmp_path / "torch" / "_inductor" / "pool.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from copyhunt.follow import _started_by_compiler\n\ndef start():\n    return probe()\n\ndef probe():\n    return _started_by_compiler()\n")
    user = tmp_path / "torch" / "utils" / "data" / "loader.py"  # a DataLoader-like caller: followed
    user.parent.mkdir(parents=True)
    user.write_text(fake.read_text())
    ns_compiler: dict = {}
    exec(compile(fake.read_text(), str(fake), "exec"), ns_compiler)
    ns_user: dict = {}
    exec(compile(user.read_text(), str(user), "exec"), ns_user)
    assert ns_compiler["start"]() is True
    assert ns_user["start"]() is False
    assert follow._started_by_compiler() is False  # called from this test file
