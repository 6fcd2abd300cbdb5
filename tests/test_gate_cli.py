"""`copyhunt gate` and `copyhunt diff` through the CLI's main(): every exit code and every output format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copyhunt.cli import main
from copyhunt.records import Copy, Frame, TraceMeta
from copyhunt.tracefile import save
from factories import copy, trace

BUDGET = """
[[rules]]
name = "model copies"
kind = "d2d"
max_copies = {limit}
"""


def _copy(file: str, line: int, nbytes: int = 64, verdict: str | None = None) -> Copy:
    return copy(0, nbytes, site=Frame(file, line, "forward"), verdict=verdict)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project dir (the cwd) with model.py whose lines 2 and 3 make copies, and a 3-copy trace of it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.py").write_text("def forward(x, y):\n    y.copy_(x)\n    x.copy_(y)\n")
    model = str(tmp_path / "model.py")
    save(trace(_copy(model, 2), _copy(model, 2), _copy(model, 3), meta=TraceMeta(target="t")), tmp_path / "t.json")
    return tmp_path


def _budget(project: Path, limit: int, name: str = "copyhunt.toml") -> Path:
    path = project / name
    path.write_text(BUDGET.format(limit=limit))
    return path


def test_gate_exit_0_at_the_limit_and_1_one_below(project, capsys):
    _budget(project, 3)  # 3 copies, limit 3: passes
    assert main(["gate", "t.json", "--budget", "copyhunt.toml"]) == 0
    assert capsys.readouterr().out.startswith("copyhunt gate: PASS - within budget\n")
    _budget(project, 2)  # limit 2: fails
    assert main(["gate", "t.json", "--budget", "copyhunt.toml"]) == 1
    out = capsys.readouterr().out
    # The violation, its sites worst first, and the offending source lines.
    assert "x model copies (kind=d2d): 3 copies, over the limit of 2\n" in out
    assert "    model.py:2 forward  aten.copy_.default d2d  2 copies, 128 B\n          2 | y.copy_(x)\n" in out
    assert "    model.py:3 forward  aten.copy_.default d2d  1 copy, 64 B\n          3 | x.copy_(y)\n" in out


def test_gate_finds_the_budget_in_the_cwd(project):
    _budget(project, 2)
    assert main(["gate", "t.json"]) == 1  # ./copyhunt.toml found without --budget


def test_gate_json(project, capsys):
    _budget(project, 2)
    assert main(["gate", "t.json", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "copyhunt.gate/1" and doc["ok"] is False
    (v,) = doc["violations"]
    assert (v["rule"], v["measure"], v["actual"], v["allowed"], v["limit"], v["headroom"]) == ("model copies", "copies", 3, 2, 2, 0.0)
    assert [(s["file"], s["line"], s["count"], s["bytes"]) for s in v["sites"]] == [("model.py", 2, 2, 128), ("model.py", 3, 1, 64)]
    assert doc["rules"] == [{"name": "model copies", "selector": "kind=d2d", "copies": 3, "bytes": 192, "eliminable": None,
                             "max_copies": 2, "max_bytes": None, "max_eliminable": None, "refuted": None, "verified": None,
                             "max_refuted": None, "max_verified": None, "ok": False}]


def test_gate_github_annotations(project, capsys):
    _budget(project, 2)
    assert main(["gate", "t.json", "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    # ':' and ',' in property values are escaped as %3A / %2C (GitHub workflow-command rules).
    assert lines == [
        "::error file=model.py,line=2,title=copyhunt gate%3A model copies::model copies (kind=d2d): 3 copies, over the limit of 2"
        " [this line: aten.copy_.default d2d, 2 copies, 128 B]",
        "::error file=model.py,line=3,title=copyhunt gate%3A model copies::model copies (kind=d2d): 3 copies, over the limit of 2"
        " [this line: aten.copy_.default d2d, 1 copy, 64 B]",
        "copyhunt gate: FAIL - 1 violation",
    ]
    _budget(project, 3)
    assert main(["gate", "t.json", "--format", "github"]) == 0
    assert capsys.readouterr().out == "copyhunt gate: PASS - within budget\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gate", "missing.json", "--budget", "copyhunt.toml"], "missing.json: no such file"),
        (["gate", "t.json", "--budget", "nope.toml"], "nope.toml: no such budget file"),
        (["gate", "t.json", "--budget", "bad.toml"], "unknown key 'max_copy' in rules[0]"),
        (["gate", "t.json", "--budget", "copyhunt.toml", "--format", "xml"], "'xml' is not one of 'text', 'json', 'github'"),
        (["gate", "t.json", "--fail-on-increase"], "needs --baseline TRACE"),
        (["gate", "--budget", "copyhunt.toml"], "give exactly one TRACE file"),
        (["gate", "t.json", "t.json", "--budget", "copyhunt.toml"], "one TRACE file expected, got 2"),
        (["gate", "foreign.json", "--budget", "copyhunt.toml"], "foreign.json: not a copyhunt trace"),
        (["gate", "trunc.json", "--budget", "copyhunt.toml"], "trunc.json: not valid JSON, truncated or corrupt"),
    ],
)
def test_gate_bad_input_exits_2_with_one_line(project, capsys, argv, message):
    _budget(project, 3)
    (project / "bad.toml").write_text("[[rules]]\nmax_copy = 1\n")
    (project / "foreign.json").write_text('{"hello": 1}')
    (project / "trunc.json").write_text('{"schema": "copyhunt.trace/1", "cop')
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_gate_without_any_budget_exits_2(project, capsys):
    assert main(["gate", "t.json"]) == 2
    assert "copyhunt: error: no budget: pass --budget FILE" in capsys.readouterr().err


def test_gate_baseline_fail_on_increase(project, capsys):
    model = str(project / "model.py")
    save(trace(_copy(model, 2), _copy(model, 3)), project / "base.json")  # 2 copies before, 3 now
    # Growth alone is only a note without --fail-on-increase (no budget needed with a baseline).
    assert main(["gate", "t.json", "--baseline", "base.json"]) == 0
    assert "note: 1 site(s) grew against the baseline (not failing: no --fail-on-increase)" in capsys.readouterr().out
    assert main(["gate", "t.json", "--baseline", "base.json", "--fail-on-increase"]) == 1
    out = capsys.readouterr().out
    assert "x model.py:2 forward aten.copy_.default d2d: 1 -> 2 copies, 64 -> 128 bytes\n" in out
    assert "          2 | y.copy_(x)\n" in out
    assert main(["gate", "base.json", "--baseline", "t.json", "--fail-on-increase"]) == 0  # fewer copies: fine


def test_diff_text_json_github_and_exit_codes(project, capsys):
    model = str(project / "model.py")
    save(trace(_copy(model, 2), _copy(model, 3, 256)), project / "base.json")
    # base: line 2 once (64 B), line 3 once (256 B); t: line 2 twice (128 B), line 3 once (64 B).
    assert main(["diff", "base.json", "t.json"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [
        "copyhunt diff: base.json -> t.json",
        "  copies 2 -> 3 (+1), bytes 320 B -> 192 B (-128 B)",
        "  sites: 0 added, 0 removed, 2 changed",
    ]
    assert main(["diff", "base.json", "t.json", "--fail-on-increase"]) == 1
    capsys.readouterr()
    assert main(["diff", "t.json", "t.json", "--fail-on-increase"]) == 0
    assert "no site changed" in capsys.readouterr().out
    assert main(["diff", "base.json", "t.json", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["grew"] is True
    assert [(s["status"], s["line"], s["grew"], s["a"]["count"], s["b"]["count"]) for s in doc["sites"]] == [
        ("changed", 3, False, 1, 1),  # -192 B: the biggest byte change first
        ("changed", 2, True, 1, 2),
    ]
    assert main(["diff", "base.json", "t.json", "--format", "github", "--fail-on-increase"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "::error file=model.py,line=2,title=copyhunt diff::copies grew: aten.copy_.default d2d, 1 -> 2 copies, 64 B -> 128 B",
        "copyhunt diff: 0 added, 0 removed, 2 changed, 1 grew",
    ]
    assert main(["diff", "base.json", "nope.json"]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err


@pytest.fixture
def script(project: Path) -> Path:
    """A target script making `copies` d2d copies (its first argument), raising when asked to."""
    path = project / "prog.py"
    path.write_text(
        "import sys\nimport torch\n\n"
        "x, y = torch.ones(4), torch.zeros(4)\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    y.copy_(x)\n"
        "if len(sys.argv) > 2:\n"
        "    raise RuntimeError('target failed')\n"
        "print('program output')\n"
    )
    return path


def test_gate_run_traces_then_gates(script, project, capsys):
    _budget(project, 2)
    # 2 copies, limit 2: exit 0; the trace is saved where -o says.
    assert main(["gate", "--run", "prog.py", "-o", "run.json", "--", "2"]) == 0
    captured = capsys.readouterr()
    assert "copyhunt gate: PASS" in captured.out
    assert "copyhunt: trace saved to run.json" in captured.err
    assert (project / "run.json").exists()
    # 3 copies: exit 1, the offending line of the program shown.
    assert main(["gate", "--run", "prog.py", "-o", "run.json", "--force", "--", "3"]) == 1
    out = capsys.readouterr().out
    assert "x model copies (kind=d2d): 3 copies, over the limit of 2" in out
    assert "prog.py:6 <module>  aten.copy_.default d2d  3 copies, 48 B" in out
    assert "          6 | y.copy_(x)" in out


def test_gate_run_json_keeps_stdout_clean(script, project, capsys):
    _budget(project, 2)
    assert main(["gate", "--run", "prog.py", "-o", "run.json", "-f", "json", "--", "1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is True  # the program's print went to stderr
    assert "program output" in captured.err


def test_gate_run_exit_codes_for_bad_and_failing_targets(script, project, capsys):
    _budget(project, 2)
    assert main(["gate", "--run", "missing.py"]) == 2
    assert "no such script: missing.py" in capsys.readouterr().err
    # The target raises: exit 3 with its traceback, no verdict, the partial trace still saved.
    assert main(["gate", "--run", "prog.py", "-o", "run.json", "--", "1", "raise"]) == 3
    captured = capsys.readouterr()
    assert "RuntimeError: target failed" in captured.err
    assert "copyhunt gate:" not in captured.out
    assert (project / "run.json").exists()
    # Ctrl-C in the target: exit 130, no verdict, the partial trace saved.
    (project / "interrupted.py").write_text("import torch\ntorch.ones(2).clone()\nraise KeyboardInterrupt\n")
    assert main(["gate", "--run", "interrupted.py", "-o", "int.json"]) == 130
    assert "copyhunt gate:" not in capsys.readouterr().out
    assert (project / "int.json").exists()
    # A bad budget fails before the target runs: no trace written.
    (project / "copyhunt.toml").write_text("[[rules]]\nmax_copies = 'x'\n")
    assert main(["gate", "--run", "prog.py", "-o", "never.json", "--", "1"]) == 2
    assert not (project / "never.json").exists()


def test_gate_run_passes_focus_and_hide_to_attribution(project, capsys):
    _budget(project, 0)
    (project / "helper.py").write_text("def copy(x, y):\n    y.copy_(x)\n")
    (project / "main.py").write_text("import torch\nimport helper\n\nhelper.copy(torch.ones(2), torch.zeros(2))\n")
    assert main(["gate", "--run", "main.py", "-o", "a.json"]) == 1
    assert "helper.py:2 copy  aten.copy_.default d2d  1 copy, 8 B" in capsys.readouterr().out  # innermost user frame
    assert main(["gate", "--run", "main.py", "-o", "b.json", "--hide", "*helper.py"]) == 1
    assert "main.py:4 <module>  aten.copy_.default d2d  1 copy, 8 B" in capsys.readouterr().out  # the caller instead
    assert main(["gate", "t.json", "--hide", "*helper.py"]) == 2  # attribution options need --run
    assert "only with --run" in capsys.readouterr().err


def test_gate_on_a_recorded_h200_profiler_trace(tmp_path, capsys):
    # A torch.profiler trace recorded on an H200 (traces/kineto-h200, the device capture's fixtures),
    # imported by load_any: 2 h2d copies and 1 d2h copy of 384 KiB each, no Python sites.
    recorded = Path(__file__).resolve().parent.parent / "traces" / "kineto-h200" / "host_device.json.gz"
    budget = tmp_path / "gpu.toml"
    budget.write_text('[[rules]]\nname = "host<->device"\nkind = ["h2d", "d2h"]\nmax_copies = 3\n')
    assert main(["gate", str(recorded), "--budget", str(budget)]) == 0  # 3 copies, limit 3
    capsys.readouterr()
    budget.write_text('[[rules]]\nname = "host<->device"\nkind = ["h2d", "d2h"]\nmax_copies = 2\n')
    assert main(["gate", str(recorded), "--budget", str(budget), "-f", "json"]) == 1
    (v,) = json.loads(capsys.readouterr().out)["violations"]
    assert [(s["kind"], s["count"], s["bytes"]) for s in v["sites"]] == [("h2d", 2, 2 * 384 * 1024), ("d2h", 1, 384 * 1024)]


def test_gate_budgets_a_verified_trace(tmp_path, monkeypatch, capsys):
    # copyhunt verify then gate: a dead store proved removable counts for max_verified.
    import sys
    import textwrap

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    (tmp_path / "gmod.py").write_text(textwrap.dedent("""\
        import torch
        def step():
            s = torch.arange(4.0) * 2
            kept = s.clone()  # overwritten before any read: a dead store
            kept = torch.where(s > 2, s, -1.0)
            return kept
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["verify", "gmod:step", "-o", "v.json", "--no-progress"]) == 0
    finally:
        sys.modules.pop("gmod", None)
    (tmp_path / "copyhunt.toml").write_text('[[rules]]\nname = "no proven waste"\nmax_verified = 0\nmax_refuted = 0\n')
    capsys.readouterr()
    assert main(["gate", "v.json"]) == 1
    out = capsys.readouterr().out
    assert "x no proven waste (all copies): 1 verified eliminable copy, over the limit of 0" in out
    assert "eliminable  refuted  verified" in out and "0 / 0    1 / 0" in out
