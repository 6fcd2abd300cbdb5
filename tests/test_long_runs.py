"""Long runs from the CLI and the API: ring mode (--max-ops), copies only (--no-verdicts), and traces
whose paths are relative to the project root so checkouts compare."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import copyhunt
from copyhunt.analysis import ensure_judged
from copyhunt.cli import main
from copyhunt.records import is_eliminable
from copyhunt.tracefile import load, save

sys.path.insert(0, str(Path(__file__).parent))
from test_real_models import _llama  # noqa: E402 - tests/ helpers


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- ring mode -----------------------------------------------------------------------------------


def test_ring_mode_keeps_every_copy_and_never_judges_copies_whose_history_was_dropped(tmp_path):
    run = _llama("dynamic")
    torch.manual_seed(0)
    with copyhunt.hunt() as full:
        run()
    with copyhunt.hunt(max_ops=400) as ring:
        run()
    # The same program twice: the same op stream (856 ops on this model), of which ring mode keeps 400.
    assert len(ring.trace.ops) == 400
    assert ring.trace.meta.ops_dropped == len(full.trace.ops) - 400 and ring.trace.meta.max_ops == 400
    assert [(c.seq, c.op, c.site) for c in ring.copies] == [(c.seq, c.op, c.site) for c in full.copies]
    start = ring.trace.ops[0].seq
    before = [c for c in ring.copies if c.seq < start]
    after = [(c.verdict, f.verdict) for c, f in zip(ring.copies, full.copies) if c.seq >= start]
    assert before and all(c.verdict == "needed" and c.reason.startswith("its op history was dropped") for c in before)
    # Inside the kept history: judged as the full trace judges them, eliminable ones included.
    assert all(r == f for r, f in after) and any(is_eliminable(r) for r, _ in after)
    assert any(is_eliminable(c.verdict) for c in full.copies if c.seq < start)  # the ring really gave some up
    assert "ring mode (--max-ops 400)" in ring.trace.meta.notes[-1]
    # A saved ring trace reads back the same way: meta says what was dropped, readers judge the window.
    save(ring.trace, tmp_path / "ring.json")
    back = load(tmp_path / "ring.json")
    assert (back.meta.max_ops, back.meta.ops_dropped, back.meta.ops_complete) == (400, ring.trace.meta.ops_dropped, False)
    assert [c.verdict for c in ensure_judged(back).read_copies()] == [c.verdict for c in ring.copies]


def test_ring_mode_never_pairs_a_copy_with_one_whose_history_was_dropped():
    a = torch.arange(16.0)
    b = torch.empty(16)
    with copyhunt.hunt() as full:
        b.copy_(a)  # copy 0: a -> b
        b.add_(1)  # b changes: copying it back is no round trip
        filler = [torch.ones(2) + 1 for _ in range(20)]
        a.copy_(b)  # copy 1
    with copyhunt.hunt(max_ops=10) as ring:  # keeps only the last 10 ops: b.add_ is dropped
        b.copy_(a)
        b.add_(1)
        filler = [torch.ones(2) + 1 for _ in range(20)]  # noqa: F841
        a.copy_(b)
    assert [c.op for c in ring.copies] == ["aten.copy_.default"] * 2
    assert full.copies[1].verdict != "round-trip"
    assert [c.verdict for c in ring.copies] == ["needed", full.copies[1].verdict]


def test_max_ops_on_the_cli_records_the_ring_in_meta_and_the_footer(tmp_path, capsys):
    write(tmp_path / "loop.py", """\
        import torch
        x = torch.ones(4, 8)
        for _ in range(30):
            y = x.clone()   # line 4
            z = y * 2
    """)
    assert main(["trace", "loop.py", "--max-ops", "10", "-o", "r.json"]) == 0
    out = capsys.readouterr().out
    trace = load("r.json")
    # torch.ones (1 op) + 30 iterations x (clone + mul) = 61 ops; the newest 10 (5 iterations) kept,
    # 51 dropped; every copy kept, the 25 made before the kept history not judged.
    assert (len(trace.ops), trace.meta.ops_dropped, len(trace.copies)) == (10, 51, 30)
    assert "ring mode (--max-ops 10): the 51 oldest op records were dropped" in " ".join(out.split())
    assert sum(f[0].reason.startswith("its op history was dropped") for f in (trace.findings or {}).values()) == 25


def test_max_ops_must_be_positive(capsys):
    assert main(["trace", "x.py", "--max-ops", "0"]) == 2
    assert "--max-ops" in capsys.readouterr().err
    with pytest.raises(copyhunt.hunting.HuntOptionError, match="max_ops must be an integer >= 1"):
        copyhunt.hunt(max_ops=0)


# --- copies only -----------------------------------------------------------------------------------

PROGRAM = """\
import torch
x = torch.ones(4, 8)
keep = [x.clone() for _ in range(3)]   # line 3: 3 copies of 128 B
"""


def test_no_verdicts_records_copies_only(tmp_path):
    write(tmp_path / "p.py", PROGRAM)
    assert main(["trace", "p.py", "--no-verdicts", "-o", "p.json"]) == 0
    trace = load("p.json")
    assert [(c.op, c.bytes) for c in trace.copies] == [("aten.clone.default", 128)] * 3
    assert [o.is_copy for o in trace.ops] == [True] * 3  # the copies' own accesses only, no other op
    assert (trace.findings, trace.meta.ops_complete, trace.meta.pending) == (None, False, ())


def test_gate_run_no_verdicts_enforces_counts_and_bytes(tmp_path, capsys):
    write(tmp_path / "p.py", PROGRAM)
    write(tmp_path / "ok.toml", "[[rules]]\nmax_copies = 3\nmax_bytes = 384\n")
    write(tmp_path / "over.toml", "[[rules]]\nmax_copies = 2\n")
    assert main(["gate", "--run", "p.py", "--no-verdicts", "-b", "ok.toml", "-o", "a.json"]) == 0
    assert main(["gate", "--run", "p.py", "--no-verdicts", "-b", "over.toml", "-o", "b.json"]) == 1


def test_gate_run_no_verdicts_refuses_a_verdict_limit_before_running(tmp_path, capsys):
    write(tmp_path / "p.py", PROGRAM)
    write(tmp_path / "elim.toml", '[[rules]]\nname = "no waste"\nmax_copies = 10\nmax_eliminable = 0\n')
    assert main(["gate", "--run", "p.py", "--no-verdicts", "-b", "elim.toml", "-o", "c.json"]) == 2
    err = capsys.readouterr().err
    assert err == ("copyhunt: error: --no-verdicts: max_eliminable cannot be checked without verdicts (no waste in elim.toml); "
                   "drop --no-verdicts, or use a budget without max_eliminable\n")
    assert not Path("c.json").exists()  # refused before anything ran


# --- paths relative to the project root ----------------------------------------------------------------

HELPER = """\
import torch
def widen(x):
    return x.to(torch.float64)   # line 3
"""

MAIN = """\
import torch
from lib.helper import widen
x = torch.ones(4, 8)
y = x.t().contiguous()           # line 4
z = widen(x)
"""


def test_one_program_traced_from_two_checkouts_diffs_to_zero_changes(tmp_path, capsys):
    project = tmp_path / "project"
    write(project / "lib" / "__init__.py", "")
    write(project / "lib" / "helper.py", HELPER)
    write(project / "prog.py", MAIN)
    (project / ".git").mkdir()  # a git work tree: the project root
    a, b = tmp_path / "ci" / "checkout", tmp_path / "home" / "me" / "src"
    shutil.copytree(project, a)
    shutil.copytree(project, b)
    os.chdir(a)
    assert main(["trace", "prog.py", "-o", str(tmp_path / "a.json")]) == 0
    for name in ("lib", "lib.helper"):  # a fresh process would import checkout b's own lib
        sys.modules.pop(name, None)
    os.chdir(tmp_path)  # the other one from outside its checkout, by path
    assert main(["trace", str(b / "prog.py"), "-o", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    ta, tb = load(tmp_path / "a.json"), load(tmp_path / "b.json")
    assert (ta.meta.root, tb.meta.root) == (str(a), str(b))
    assert [(c.site.file, c.site.line) for c in ta.copies] == [("prog.py", 4), ("lib/helper.py", 3)]
    assert [c.stack for c in ta.copies] == [c.stack for c in tb.copies]
    assert not any(str(tmp_path) in json.dumps(fr) for fr in json.loads((tmp_path / "a.json").read_text())["copies"])
    assert main(["diff", "a.json", "b.json", "--fail-on-increase", "--format", "json", "--all"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(c["status"], c["file"], c["line"]) for c in doc["sites"]] == [("same", "lib/helper.py", 3), ("same", "prog.py", 4)]
    write(tmp_path / "copyhunt.toml", "[[rules]]\nsite = 'lib/*.py'\nmax_copies = 1\n")
    assert main(["gate", "b.json", "--baseline", "a.json", "--fail-on-increase"]) == 0
    assert main(["report", "b.json", "--site", "*/helper.py"]) == 0
    assert "lib/helper.py:3" in capsys.readouterr().out


def test_read_time_attribution_knows_recorded_import_paths():
    from dataclasses import replace

    from copyhunt.attribution import reattribute
    from factories import frame, record

    # A stack as `copyhunt trace` records it: project files relative, torch and copyhunt by import path.
    stack = (frame("torch/nn/functional.py", 9, "pad"), frame("lib/helper.py", 3, "widen"), frame("prog.py", 5, "<module>"),
             frame("<frozen runpy>", 88, "_run_code"), frame("copyhunt/targets.py", 121, "_run_script"))
    c = replace(record(0, site=stack[1]), stack=stack[1:])
    assert reattribute([c], hide=["*/helper.py"])[0].site == stack[2]  # the caller, not torch or copyhunt
    assert reattribute([c], hide=["*/helper.py", "*/prog.py"])[0].site == stack[1]  # none left: the site stays
