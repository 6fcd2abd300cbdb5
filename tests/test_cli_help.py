"""Help that fits: golden help text of every command at 60 and 80 columns, and options that agree.

The golden files (tests/golden/help/) are the help as a user reads it; after changing a help text,
regenerate them with ``COPYHUNT_UPDATE_GOLDEN=1 python -m pytest tests/test_cli_help.py`` and read the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from copyhunt import __version__
from copyhunt.cli import main
from copyhunt.cli.app import app
from copyhunt.tracefile import save
from copyhunt.records import Frame
from factories import copy, trace

def sample_trace():
    return trace(copy(0, 64, site=Frame("/repo/m.py", 2, "forward")), copy(1, 32, site=Frame("/repo/m.py", 3, "forward")))


GOLDEN = Path(__file__).parent / "golden" / "help"
COMMANDS = [[], ["trace"], ["verify"], ["report"], ["gate"], ["diff"], ["bench"], ["bench", "moe"]]


def _help(capsys, monkeypatch, command: list[str], columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    return out


@pytest.mark.parametrize("columns", [60, 80])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c) or "copyhunt")
def test_help_matches_golden_and_fits(capsys, monkeypatch, command, columns):
    out = _help(capsys, monkeypatch, command, columns)
    name = f"{'-'.join(command) or 'copyhunt'}-{columns}.txt"
    golden = GOLDEN / name
    if os.environ.get("COPYHUNT_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()
    assert max(len(line) for line in out.splitlines()) <= columns
    assert "…" not in out  # nothing cut short
    # typer's type labels are never shown: every value has a real metavar
    assert not re.search(r"<(str|int|float|bool|path|list\[[^]]*\])>", out)


def _texts(command: list[str]) -> list[str]:
    """Every help text the command's parameters carry (what must appear whole)."""
    import typer.main

    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]
    texts = [getattr(p, "help", None) for p in cmd.params]
    return [t for t in texts if t]


@pytest.mark.parametrize("columns", [60, 80])
@pytest.mark.parametrize("command", [c for c in COMMANDS if c and c != ["bench"]], ids="-".join)
def test_no_help_text_is_cut_mid_word(capsys, monkeypatch, command, columns):
    # Each option's help, whitespace-normalised, appears whole in the wrapped output: a word broken
    # across lines (``./copyhunt-<ta`` / ``rget>``) or cut with an ellipsis would not match.
    flat = " ".join(_help(capsys, monkeypatch, command, columns).split())
    texts = _texts(command)
    assert len(texts) >= 3
    for text in texts:
        assert " ".join(text.split()) in flat, text


def test_usage_lines(capsys, monkeypatch):
    expected = {
        ("trace",): "Usage: copyhunt trace [OPTIONS] [TARGET] [-- ARGS...]",
        ("verify",): "Usage: copyhunt verify [OPTIONS] [TARGET|TRACE] [-- ARGS...]",
        ("report",): "Usage: copyhunt report [OPTIONS] FILE...",
        ("gate",): "Usage: copyhunt gate [OPTIONS] [TRACE] [-- ARGS...]",
        ("diff",): "Usage: copyhunt diff [OPTIONS] A B",
    }
    for command, usage in expected.items():
        assert _help(capsys, monkeypatch, list(command), 80).splitlines()[0] == usage


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"copyhunt {__version__}\n"


@pytest.mark.parametrize(
    "argv, line",
    [
        (["report", "t.json", "--xyzzy"], "copyhunt report: error: No such option: --xyzzy"),
        (["report", "t.json", "--sortt", "site"], "copyhunt report: error: No such option: --sortt (Possible options: --json, --site, --sort)"),
        (["report", "t.json", "--by", "file"],
         "copyhunt report: error: Invalid value for '--by': 'file' is not one of 'site', 'module', 'region'."),
        (["report", "t.json", "--top", "x"], "copyhunt report: error: Invalid value for '--top': expected integer"),
        (["report"], "copyhunt report: error: Missing argument 'FILE'."),
        (["trace", "script.py", "--batch", "8"],
         "copyhunt trace: error: No such option: --batch (to pass it to the program, put it after --: "
         "copyhunt trace TARGET -- --batch ...)"),
        (["gate", "t.json", "--json", "--format", "github"],
         "copyhunt gate: error: Invalid value for --json: --json and --format github disagree; give one"),
        (["nosuchcommand"], "copyhunt: error: No such command 'nosuchcommand'."),
    ],
)
def test_a_bad_flag_is_one_line_on_stderr(tmp_path, monkeypatch, capsys, argv, line):
    monkeypatch.chdir(tmp_path)
    save(sample_trace(), "t.json")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == line + "\n"


def test_json_on_every_command_that_prints_a_result(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(sample_trace(), "t.json")
    (tmp_path / "copyhunt.toml").write_text("[[rules]]\nmax_copies = 1000\n")
    for argv in (["report", "t.json"], ["gate", "t.json"], ["diff", "t.json", "t.json"]):
        assert main([*argv, "--json"]) == 0, argv
        as_json = capsys.readouterr().out
        json.loads(as_json)
        if argv[0] != "report":  # gate and diff: --json is --format json, byte for byte
            assert main([*argv, "--format", "json"]) == 0
            assert capsys.readouterr().out == as_json
