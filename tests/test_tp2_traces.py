"""Issue 19's stored 2-rank NCCL TP2 MoE run (``traces/tp2/``), re-merged on the CPU.

``benchmarks/gpu_tp_moe.sh`` on 2 NVIDIA H200s (torch 2.11.0+cu130, NCCL): ``copyhunt trace --device-trace
-m torch.distributed.run -- --nproc-per-node 2 benchmarks/gpu_tp_moe_job.py --mode baseline --layers 2
--tokens 8``; the run folder as written: ``run.json`` (the launcher) + ``run/rank0.json``, ``run/rank1.json``
(no Kineto files: the run folder keeps none).

The expected values are counted here from the raw per-rank JSON with plain ``json`` (and the job's
command line stored in each trace's ``meta.argv``), never from the merge under test, which is the one
``copyhunt report RUNFOLDER`` runs (``copyhunt.analysis.runs.load_run`` / ``merge_run``,
``copyhunt.report.runs_table.run_to_json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copyhunt.analysis.runs import load_run, merge_run
from copyhunt.cli import main
from copyhunt.report.runs_table import run_to_json

TP2 = Path(__file__).resolve().parent.parent / "traces" / "tp2"
RANK_FILES = {0: TP2 / "run" / "rank0.json", 1: TP2 / "run" / "rank1.json"}
HIDDEN = 3072  # MiniMax M2.5's K (the job's TP2 preset)


def _raw(rank: int) -> dict:
    return json.loads(RANK_FILES[rank].read_text())


def _arg(doc: dict, flag: str) -> int:
    argv = doc["meta"]["argv"]
    return int(argv[argv.index(flag) + 1])


def _program_copies(doc: dict) -> list[tuple[int, dict]]:
    """(index, copy) of the copies the program's own ops made (origin 'dispatch'), from the raw file."""
    return [(i, c) for i, c in enumerate(doc["copies"]) if c["origin"] == "dispatch"]


def _collectives(doc: dict) -> list[int]:
    """Indices of the raw op records whose op name is a c10d collective."""
    strings, ops = doc["strings"], doc["ops"]
    return [i for i, s in enumerate(ops["op"]) if strings[s].startswith("c10d.")]


@pytest.fixture(scope="module")
def merged() -> dict:
    return run_to_json(merge_run(load_run([TP2 / "run.json"])))


def test_raw_files_hold_two_ranks_with_two_copies_per_layer():
    for rank in (0, 1):
        doc = _raw(rank)
        meta = doc["meta"]
        assert (meta["rank"], meta["world_size"], meta["complete"]) == (rank, 2, True)
        assert meta["device"] == f"cuda:{rank} NVIDIA H200"  # NCCL: one GPU per rank
        layers, tokens = _arg(doc, "--layers"), _arg(doc, "--tokens")
        assert (layers, tokens) == (2, 8)
        own = _program_copies(doc)
        assert len(own) == 2 * layers == 4
        assert {(c["kind"], c["op"], c["site"]["line"]) for _, c in own} == {
            ("d2d", "aten.copy_.default", 51), ("d2d", "aten.copy_.default", 86)}
        assert all(c["site"]["file"].endswith("copyhunt_moe/modular.py") for _, c in own)
        assert all(c["bytes"] == tokens * HIDDEN * 2 and c["shape"] == [tokens, HIDDEN] for _, c in own)
        assert len(_collectives(doc)) == layers  # one all_reduce per layer


def test_merge_has_parent_and_two_ranks(merged):
    assert [p["label"] for p in merged["processes"]] == ["parent", "rank0", "rank1"]
    by = {p["label"]: p for p in merged["processes"]}
    assert by["parent"]["copies"] == 0
    for rank in (0, 1):
        doc = _raw(rank)
        p = by[f"rank{rank}"]
        assert (p["rank"], p["world_size"], p["complete"]) == (rank, 2, True)
        assert p["copies"] == len(doc["copies"])  # every copy of the file, NCCL's own h2d included
        assert p["collectives"] == len(_collectives(doc)) == 2


def test_merged_modular_rows_are_two_per_layer_per_rank_with_device_time(merged):
    rows = [r for r in merged["sites"] if r["file"].endswith("copyhunt_moe/modular.py")]
    assert sorted(r["line"] for r in rows) == [51, 86]
    for r in rows:
        assert (r["op"], r["kind"], r["imbalance"]) == ("aten.copy_.default", "d2d", 1.0)
        assert r["per_process"]["parent"]["count"] == 0
        for rank in (0, 1):
            doc = _raw(rank)
            at_line = [(i, c) for i, c in _program_copies(doc) if c["site"]["line"] == r["line"]]
            assert len(at_line) == _arg(doc, "--layers") == 2  # one per layer at each of the two lines
            cell = r["per_process"][f"rank{rank}"]
            assert cell["count"] == len(at_line)
            assert cell["bytes"] == sum(c["bytes"] for _, c in at_line)
            times = {t["copy"]: t["time_us"] for t in doc["timings"]}
            assert all(i in times for i, _ in at_line)  # every copy timed on the device
            assert cell["device_us"] == pytest.approx(sum(times[i] for i, _ in at_line))
    assert sum(r["count"] for r in rows) == 8  # 2 copies x 2 layers x 2 ranks


def test_collective_rows_beside_the_copies(merged):
    assert len(merged["collectives"]) == 1
    row = merged["collectives"][0]
    assert row["op"].startswith("c10d.allreduce_")
    assert row["file"].endswith("benchmarks/gpu_tp_moe_job.py") and row["function"] == "step"
    assert row["per_process"]["parent"]["count"] == 0
    for rank in (0, 1):
        doc = _raw(rank)
        idx = _collectives(doc)
        # bytes of the op's tensor, each storage range once: the all_reduced M x K bf16 partial output
        nbytes = 0
        for i in idx:
            flat = [*doc["ops"]["reads"][i], *doc["ops"]["writes"][i]]  # [storage, offset, nbytes, dense] x n
            ranges = {tuple(flat[j:j + 3]) for j in range(0, len(flat), 4)}
            nbytes += sum(n for _, _, n in ranges)
        assert nbytes == _arg(doc, "--layers") * _arg(doc, "--tokens") * HIDDEN * 2
        assert row["per_process"][f"rank{rank}"] == {"count": len(idx), "bytes": nbytes, "device_us": None}


def test_nccl_setup_copies_are_reported_not_hidden(merged):
    # NCCL's own host-to-device copies (origin 'device', seen only by device capture) are rows too.
    for rank in (0, 1):
        doc = _raw(rank)
        other = [c for c in doc["copies"] if c["origin"] != "dispatch"]
        assert other and all(c["kind"] == "h2d" for c in other)
        merged_other = sum(r["per_process"][f"rank{rank}"]["count"] for r in merged["sites"]
                           if not r["file"].endswith("copyhunt_moe/modular.py"))
        assert merged_other == len(other)


def test_report_cli_on_the_folder_and_one_rank(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["report", str(TP2 / "run"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in doc["processes"]] == ["parent", "rank0", "rank1"]
    assert main(["report", str(TP2 / "run"), "--rank", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{len(_raw(1)['copies'])} copies" in out
