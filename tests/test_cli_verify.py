"""`copyhunt verify`, driven in-process: function, script and trace-file targets, --json, --sites, bad input.

The target module makes one dead store (a clone overwritten before any read: verified) and one copy a
wrong rule could not prove (kept). Programs are tiny: each verify runs them 5 times or so.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from copyhunt.cli import main
from copyhunt.tracefile import load

MODULE = """\
import torch
W = torch.arange(4.0)
def step():
    scores = W * 2
    kept = scores.clone()  # line 5: overwritten before anything reads it (a dead store)
    kept = torch.where(scores > 2, scores, -1.0)
    buf = torch.zeros(4)
    buf.copy_(W)  # line 8: W is the caller's, buf is read: needed
    return kept + buf
def fails():
    raise RuntimeError("boom in fails")
"""

SCRIPT = """\
import torch
x = torch.arange(4.0)
y = x * 2
z = y.clone()  # line 4: y changes below, so the clone stays
y.add_(1)
z2 = (x + 1).clone()  # line 6: a clone of a temporary nobody else reads
print("sum", float((z + z2 + y).sum()))
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    (tmp_path / "vmod.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "s.py").write_text(textwrap.dedent(SCRIPT))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("vmod", None)


def by_line(path: str | Path) -> dict[int, tuple[str | None, str | None]]:
    return {c.site.line: (c.verdict, c.verification.status if c.verification else None) for c in load(path).read_copies()}


def test_function_target_table_and_saved_trace(capsys):
    assert main(["verify", "vmod:step", "-o", "v.json", "--no-progress"]) == 0
    assert by_line("v.json") == {5: ("dead-store", "verified"), 8: ("needed", None)}
    out = capsys.readouterr().out
    assert "proof       1 eliminable copies re-run: 1 verified, 0 refuted, 0 not testable (on this input)" in out
    assert "  proof: verified: identical return value and printed output on this input" in out
    notes = load("v.json").meta.notes
    assert notes[-1].startswith("copyhunt verify: 1 site(s) re-run with their eliminable copies elided, on this input: 1 verified")


def test_script_target_compares_every_op_and_what_it_prints(capsys):
    assert main(["verify", "s.py", "-o", "v.json", "--no-progress"]) == 0
    got = by_line("v.json")
    assert got[4] == ("needed", None)
    assert got[6][1] == "verified"
    (c,) = [c for c in load("v.json").read_copies() if c.site.line == 6]
    assert c.verification.detail == "identical outputs of every later op and identical printed output on this input"
    assert "sum 38.0" not in capsys.readouterr().out  # the program's print ("sum 38.0") is compared, not shown


def test_trace_file_form_reruns_its_target(capsys):
    assert main(["trace", "vmod:step", "-o", "t.json"]) == 0
    capsys.readouterr()
    assert main(["verify", "t.json", "-o", "v.json", "--no-progress", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["meta"]["target"] == "vmod:step"
    assert doc["meta"]["notes"][-1] == "verified against a fresh trace of t.json's target: the same copies and verdicts as t.json"
    (dead,) = [i for i, c in enumerate(doc["copies"]) if c["site"]["line"] == 5]
    assert doc["verifications"] == [
        {"copy": dead, "status": "verified", "detail": "identical return value and printed output on this input", "seq": None}
    ]


def test_sites_filter_and_time_budget(capsys):
    assert main(["verify", "vmod:step", "-o", "a.json", "--no-progress", "--sites", "*other.py:1"]) == 0
    assert by_line("a.json")[5] == ("dead-store", None)  # filtered out: not re-run
    assert main(["verify", "vmod:step", "-o", "b.json", "--no-progress", "--time-budget", "0"]) == 0
    (c,) = [c for c in load("b.json").read_copies() if c.site.line == 5]
    assert (c.verification.status, c.verification.detail) == ("not-testable", "not run: the time budget of 0 s was spent on earlier sites")


def test_bad_input_and_a_failing_program(tmp_path, capsys):
    assert main(["verify", "vmod:nothing", "-o", "x.json", "--no-progress"]) == 2
    assert "module 'vmod' has no function 'nothing'" in capsys.readouterr().err
    (tmp_path / "api.json").write_text(json.dumps({"schema": "copyhunt.trace/1", "meta": {}, "copies": []}))
    assert main(["verify", "api.json", "--no-progress"]) == 2
    assert "api.json: the trace does not name its target" in capsys.readouterr().err
    assert main(["verify", "vmod:fails", "-o", "f.json", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "RuntimeError: boom in fails" in err and "nothing saved" in err
    assert not Path("f.json").exists()
