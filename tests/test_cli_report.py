"""`copyhunt report FILE`: renders saved traces, prints the document with --json, fails bad files in one line."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from copyhunt.cli import main
from copyhunt.records import DeviceTiming, Frame, Trace, TraceMeta
from copyhunt.tracefile import SCHEMA, save
from copyhunt.report.table import render_table
from copyhunt.selection import Selection
from copyhunt.view import view
from factories import copy, trace


@pytest.fixture(autouse=True)
def _fixed_width(monkeypatch):
    # rich sizes a non-terminal console from COLUMNS (default 80); fix it so output is comparable.
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("NO_COLOR", raising=False)


def sample_trace() -> Trace:
    site = Frame("model.py", 7, "forward")
    return trace(
        copy(1, 4096, site=site, region="decode/moe", verdict="fresh-temporary", reason="r", suggestion="s",
             timing=DeviceTiming("Memcpy DtoD (Device -> Device)", 3.0, 4096, start_us=100.0)),
        copy(2, 1024, op="aten._to_copy.default", kind="h2d", dst_device="cuda:0", site=Frame("model.py", 9, "forward"),
             verdict="needed", timing=DeviceTiming("Memcpy HtoD (Pageable -> Device)", 1.0, 1024, start_us=90.0)),
        meta=TraceMeta(target="model.py", device="cuda:0", gpu_time_us=40.0),
    )


def expected_table(t: Trace, path: str, selection: Selection | None = None, **kw) -> str:
    console = Console(width=100, file=io.StringIO())
    render_table(view(t, selection), console, trace_path=path, **kw)
    return console.file.getvalue()


def test_report_renders_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(sample_trace(), "t.json")
    assert main(["report", "t.json"]) == 0
    out, err = capsys.readouterr()
    assert out == expected_table(sample_trace(), "t.json")
    assert err == ""
    assert "\x1b[" not in out  # piped: plain text
    # 4 KiB + 1 KiB = 5 KiB; device 3 + 1 = 4 us of 40 us GPU time = 10.0%.
    assert "2 copies, 5.0 KiB written" in out and "4.0 us in copies, 10.0% of 40.0 us GPU time" in out
    # Only seq 1 (fresh-temporary, 4 KiB, 3 us) looks eliminable.
    assert "eliminable   1 of 2 copies, 4.0 KiB, 3.0 us look eliminable" in out
    assert out.endswith("trace file: t.json\n")


def test_report_display_options(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(sample_trace(), "t.json")
    assert main(["report", "t.json", "--kind", "h2d", "--by", "region", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert out == expected_table(sample_trace(), "t.json", selection=Selection(kinds=("h2d",)), by="region", top=1)
    assert "1 copy, 1.0 KiB written" in out and "(no region)" in out and "decode/moe" not in out


def test_report_json_is_the_document(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(sample_trace(), "t.json")
    assert main(["report", "t.json", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads((tmp_path / "t.json").read_text())
    assert err == ""
    assert main(["report", "t.json", "--json", "--kind", "d2d"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == SCHEMA and [c["seq"] for c in doc["copies"]] == [1]


def test_report_perfetto(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(sample_trace(), "t.json")
    assert main(["report", "t.json", "--perfetto", "tl.json"]) == 0
    err = capsys.readouterr().err
    assert err == "copyhunt: timeline written to tl.json (open it in ui.perfetto.dev)\n"
    doc = json.loads((tmp_path / "tl.json").read_text())
    copies = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    # Both copies have device start times: they sit on the device clock.
    assert [(e["name"], e["ts"], e["dur"]) for e in copies] == [
        ("model.py:7 forward [fresh-temporary]", 100.0, 3.0),
        ("model.py:9 forward [needed]", 90.0, 1.0),
    ]
    # An existing timeline is not overwritten without --force.
    (tmp_path / "tl.json").write_text("mine")
    assert main(["report", "t.json", "--perfetto", "tl.json"]) == 2
    assert capsys.readouterr().err == "copyhunt: error: --perfetto tl.json: file exists; pass --force to overwrite it\n"
    assert (tmp_path / "tl.json").read_text() == "mine"
    assert main(["report", "t.json", "--perfetto", "tl.json", "--force"]) == 0
    assert json.loads((tmp_path / "tl.json").read_text())["otherData"]["producer"] == "copyhunt"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"schema": "copyhunt.trace/1", "copies": [', "bad.json: not valid JSON, truncated or corrupt (line 1: Expecting value)"),
        # Foreign JSON: the importers name the formats they know; the line starts the same either way.
        ('{"someOtherTool": 5}', "bad.json: not a copyhunt trace*"),
        ('{"schema": "other.tool/1"}', "bad.json: not a copyhunt trace (schema 'other.tool/1', expected 'copyhunt.trace/3')"),
        (
            '{"schema": "copyhunt.trace/99"}',
            "bad.json: written by a newer copyhunt (schema 'copyhunt.trace/99'; this copyhunt reads up to 'copyhunt.trace/3'); upgrade copyhunt",
        ),
        (None, "bad.json: no such file"),
    ],
)
def test_bad_files_fail_in_one_line(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "bad.json").write_text(content)
    assert main(["report", "bad.json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    if message.endswith("*"):
        assert err.startswith(f"copyhunt: error: {message[:-1]}") and err.count("\n") == 1
    else:
        assert err == f"copyhunt: error: {message}\n"


def test_bad_options_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(sample_trace(), "t.json")
    assert main(["report", "t.json", "--kind", "d2d,x2y"]) == 2
    assert capsys.readouterr().err == (
        "copyhunt: error: --kind 'x2y' is not a copy kind (valid: d2d, h2d, d2h, p2p)\n"
    )
    assert main(["report", "t.json", "--by", "file"]) == 2
    assert "Invalid value for '--by'" in capsys.readouterr().err
    assert main(["report", "t.json", "--top", "-1"]) == 2
    assert "Invalid value for '--top'" in capsys.readouterr().err


def test_report_on_a_narrow_pipe_stacks_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "60")
    save(sample_trace(), "t.json")
    assert main(["report", "t.json"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 60
    # Device and verdict columns need more than 60 columns: one two-line block per site instead.
    assert "1. model.py:7 forward\n   op copy_  kind d2d  count 1  bytes 4.0 KiB  share 80.0%" in out
