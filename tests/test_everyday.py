"""Everyday use (issue 16): files follow the umask, the next step after `trace`, budgets found in parent folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from copyhunt.cli import main
from copyhunt.gate.check import find_budget
from copyhunt.records import Frame
from copyhunt.tracefile import save
from factories import copy, trace


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_trace_files_follow_the_umask(tmp_path, umask_027):
    save(trace(copy(0, 16)), tmp_path / "t.json")
    assert _mode(tmp_path / "t.json") == 0o640  # 0666 less 027; mkstemp alone would give 0600
    os.umask(0o002)
    save(trace(copy(0, 16)), tmp_path / "t.json", overwrite=True)
    assert _mode(tmp_path / "t.json") == 0o664


def test_trace_and_report_outputs_share_one_mode(tmp_path, monkeypatch, umask_027):
    # `trace -o`, `report --perfetto` and `report --html` all write 0640 under umask 027.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (tmp_path / "s.py").write_text("import torch\nx = torch.ones(4)\ny = x.clone()\n")
    assert main(["trace", "s.py", "-o", "t.json"]) == 0
    assert main(["report", "t.json", "--perfetto", "p.json", "--html", "r.html"]) == 0
    assert {name: _mode(tmp_path / name) for name in ("t.json", "p.json", "r.html")} == dict.fromkeys(("t.json", "p.json", "r.html"), 0o640)


def test_trace_ends_with_one_line_saying_what_next(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (tmp_path / "s.py").write_text("import torch\nx = torch.ones(4)\ny = x.clone()\n")
    assert main(["trace", "s.py", "-o", "t.json"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "copyhunt: next: `copyhunt report t.json --html report.html` to browse it, "
        "`copyhunt diff OLD.json t.json` to compare, `copyhunt gate t.json` to check a budget"
    )


BUDGET = "[[rules]]\nmax_copies = {n}\n"


def _project(root: Path) -> Path:
    """root/ with a 3-copy trace; returns root/tests/unit (a folder two levels down)."""
    save(trace(*(copy(i, 16, site=Frame("/repo/m.py", 2, "f")) for i in range(3))), root / "t.json")
    sub = root / "tests" / "unit"
    sub.mkdir(parents=True)
    return sub


def test_gate_finds_copyhunt_toml_in_a_parent_folder(tmp_path, monkeypatch, capsys):
    sub = _project(tmp_path)
    (tmp_path / "copyhunt.toml").write_text(BUDGET.format(n=2))
    monkeypatch.chdir(sub)
    assert main(["gate", "../../t.json"]) == 1  # found two levels up: 3 copies over 2
    out = capsys.readouterr().out
    assert "  budget   ../../copyhunt.toml\n" in out


def test_gate_finds_pyproject_tool_copyhunt_in_a_parent_and_the_nearest_wins(tmp_path, monkeypatch):
    sub = _project(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.copyhunt]\n" + BUDGET.format(n=5).replace("[[rules]]", "[[tool.copyhunt.rules]]"))
    (tmp_path / "tests" / "pyproject.toml").write_text("[project]\nname = 'tests'\n")  # no table: passed over
    monkeypatch.chdir(sub)
    assert find_budget() == Path("../../pyproject.toml")
    assert main(["gate", "../../t.json"]) == 0  # 3 copies within 5
    (tmp_path / "tests" / "copyhunt.toml").write_text(BUDGET.format(n=1))  # nearer: wins
    assert find_budget() == Path("../copyhunt.toml")
    assert main(["gate", "../../t.json"]) == 1


def test_gate_in_the_budget_folder_names_it_relatively(tmp_path, monkeypatch):
    _project(tmp_path)
    (tmp_path / "copyhunt.toml").write_text(BUDGET.format(n=3))
    monkeypatch.chdir(tmp_path)
    assert find_budget() == Path("copyhunt.toml")
