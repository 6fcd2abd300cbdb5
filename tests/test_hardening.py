"""Issue 18, item by item: a gate that fails closed, traces safe to open, saves that never clobber,
text shown as data, a clean --json, and a trace that stays where it was asked for.

Programs are tiny real torch scripts; expected source text is the script's own line as written here,
never copyhunt's output. Anything that could end the test process (os._exit) runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import factories
from copyhunt.cli import main
from copyhunt.cli.tracing import default_output
from copyhunt.errors import EXIT_INTERNAL
from copyhunt.records import DeviceTiming, Finding, Frame, Trace, TraceMeta
from copyhunt.targets import parse_target
from copyhunt.text import visible
from copyhunt.tracefile import load, save, to_json

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

PROG = """\
import os
import torch
x = torch.ones(4, 8)
y = x.t().contiguous()  # one copy, 128 bytes
"""


def _cli(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "copyhunt", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


# --- 1. the gate fails closed --------------------------------------------------------------------


def test_gate_run_on_os_exit_zero_fails(tmp_path: Path) -> None:
    # Used to exit 0 with no output and no trace: os._exit ended the process before the gate ran.
    (tmp_path / "prog.py").write_text(PROG + "os._exit(0)\n")
    (tmp_path / "zero.toml").write_text("[[rules]]\nmax_copies = 0\n")
    r = _cli(["gate", "--run", "prog.py", "--budget", "zero.toml", "-o", "t.json"], tmp_path)
    assert r.returncode == 3, r.stderr
    assert "copyhunt: target called os._exit(0) before finishing: the trace is incomplete\n" in r.stderr
    assert "PASS" not in r.stdout and "Traceback" not in r.stderr
    doc = json.loads((tmp_path / "t.json").read_text())  # the partial trace is kept, marked incomplete
    assert doc["meta"]["complete"] is False and len(doc["copies"]) == 1


def test_gate_on_an_incomplete_trace_exits_3(tmp_path: Path, capsys) -> None:
    t = factories.trace(factories.record(0, 16), meta=TraceMeta(complete=False, error="target called os._exit(0)"))
    save(t, tmp_path / "t.json")
    (tmp_path / "b.toml").write_text("[[rules]]\nmax_copies = 100\n")
    assert main(["gate", str(tmp_path / "t.json"), "--budget", str(tmp_path / "b.toml")]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"copyhunt: error: {tmp_path / 't.json'}: the trace is incomplete (target called os._exit(0)); no verdict on half a run\n"


def test_gate_on_a_missing_trace_is_not_a_pass(tmp_path: Path, capsys) -> None:
    (tmp_path / "b.toml").write_text("[[rules]]\nmax_copies = 100\n")
    assert main(["gate", str(tmp_path / "gone.json"), "--budget", str(tmp_path / "b.toml")]) == 2
    assert capsys.readouterr().err == f"copyhunt: error: {tmp_path / 'gone.json'}: no such file\n"


@pytest.mark.parametrize("field,value,message", [
    ("bytes", -10, "copies[0].bytes must be an integer >= 0, got -10"),
    ("kind", "zzz", "copies[0].kind must be one of d2d, h2d, d2h, p2p, got 'zzz'"),
    ("site", {"file": "a.py", "line": -3, "function": "f"}, "copies[0].site.line must be a line number >= 1, got -3"),
    ("origin", "mars", "copies[0].origin must be one of dispatch, device, graph-replay, imported, compiled, got 'mars'"),
])
def test_values_are_validated_on_load(field, value, message, tmp_path: Path, capsys) -> None:
    doc = to_json(factories.trace(factories.record(0, 16, site=factories.frame())))
    doc["copies"][0][field] = value
    (tmp_path / "t.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path / "t.json")]) == 2
    assert capsys.readouterr().err == f"copyhunt: error: {tmp_path / 't.json'}: {message}\n"


def test_unknown_verdict_and_negative_time_are_refused(tmp_path: Path, capsys) -> None:
    t = factories.trace(factories.copy(0, 16, verdict="noop", us=1.0))
    doc = to_json(t)
    doc["findings"][0]["verdict"] = "totally-fine"
    (tmp_path / "a.json").write_text(json.dumps(doc))
    doc = to_json(t)
    doc["timings"][0]["time_us"] = -1.0
    (tmp_path / "b.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path / "a.json")]) == 2
    assert "findings[copy 0].verdict must be one of noop," in capsys.readouterr().err
    assert main(["report", str(tmp_path / "b.json")]) == 2
    assert "timings[copy 0].time_us must be a finite number >= 0, got -1.0" in capsys.readouterr().err


def test_an_internal_error_has_its_own_exit_code_and_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    # Every crash used to exit 1, which a CI reads as "over budget".
    save(factories.trace(factories.record(0, 16)), tmp_path / "t.json")
    (tmp_path / "b.toml").write_text("[[rules]]\nmax_copies = 100\n")
    import copyhunt.gate

    def boom(*args, **kwargs):
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr(copyhunt.gate, "evaluate", boom)
    assert main(["gate", str(tmp_path / "t.json"), "--budget", str(tmp_path / "b.toml")]) == EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("copyhunt: internal error: RuntimeError: a bug (at test_hardening.py:")
    assert "please report it" in err


# --- 2. source text captured at trace time; no file named by a trace is opened ------------------------


def test_source_text_is_recorded_and_shown_without_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.py").write_text(PROG)
    (tmp_path / "b.toml").write_text("[[rules]]\nmax_copies = 0\n")
    assert main(["trace", "prog.py", "-o", "t.json"]) == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    assert [c["site"]["source_text"] for c in doc["copies"]] == ["y = x.t().contiguous()  # one copy, 128 bytes"]
    (tmp_path / "prog.py").write_text("# rewritten\n" * 10)  # the gate must show what ran, not today's file
    capsys.readouterr()
    assert main(["gate", "t.json", "--budget", "b.toml"]) == 1
    out = capsys.readouterr().out
    assert "    4 | y = x.t().contiguous()  # one copy, 128 bytes" in out
    assert "rewritten" not in out


def _crafted(tmp_path: Path, files: list[str]) -> Path:
    copies = [factories.record(i, 16, site=Frame(f, 1, "f")) for i, f in enumerate(files)]
    return save(factories.trace(*copies), tmp_path / "crafted.json")


def test_gate_never_prints_files_a_trace_names(tmp_path: Path, capsys) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("TOPSECRET=1\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = _crafted(tmp_path, ["/etc/passwd", str(secret), "/proc/self/environ", "/dev/zero", str(fifo)])
    (tmp_path / "b.toml").write_text("[[rules]]\nmax_copies = 0\n")
    assert main(["gate", str(path), "--budget", str(tmp_path / "b.toml")]) == 1  # no hang on the FIFO / /dev/zero
    out = capsys.readouterr().out
    assert "root:" not in out and "TOPSECRET" not in out and "PATH=" not in out and " | " not in out
    secret.unlink()


def test_plugin_failure_shows_recorded_text_only() -> None:
    from copyhunt.pytest_plugin import format_sites

    site = Frame("/etc/passwd", 1, "f", source_text="x = y.clone()\x1b[2J")
    lines = format_sites([factories.copy(0, 16, site=site), factories.copy(1, 16, site=Frame("/etc/passwd", 2, "g"))])
    text = "\n".join(lines)
    assert "    1 | x = y.clone()\x1b[2J" in text and "root:" not in text


def test_a_local_trace_reads_only_regular_files_under_the_project(tmp_path: Path, monkeypatch) -> None:
    from copyhunt.analysis.diff import SiteKey
    from copyhunt.report.gate_report import site_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text("a = 1\nb = a.clone()\n")
    assert site_source(SiteKey("m.py", 2, "f", "op", "d2d")) == "b = a.clone()"
    assert site_source(SiteKey("/etc/passwd", 1, "f", "op", "d2d")) is None
    assert site_source(SiteKey("../" * 20 + "etc/passwd", 1, "f", "op", "d2d")) is None
    assert site_source(SiteKey("m.py", 2, "f", "op", "d2d", source_text="recorded")) == "recorded"


# --- 3. every renderer shows text as data ---------------------------------------------------------

EVIL = "\x1b]0;owned\x07\x1b[2J[bold red]MARKUP[/bold red] x[a:b:2] :smile: \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ \u202egnp.exe"


def _hostile_trace() -> Trace:
    site = Frame(f"/tmp/{EVIL}.py", 3, EVIL, source_text=EVIL)
    c = factories.copy(0, 4096, site=site, op=EVIL, dtype=EVIL, src_device=EVIL, dst_device=EVIL, module=EVIL, region=EVIL,
                       verdict="defensive-clone", reason=EVIL, suggestion=EVIL, timing=DeviceTiming(EVIL, 2.0, 4096))
    meta = TraceMeta(target=EVIL, device=EVIL, error=EVIL, complete=True, notes=(EVIL,), argv=(EVIL,))
    return factories.trace(c, meta=meta)


def _assert_data(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "🅱" not in text and "😄" not in text  # emoji codes stay text
    flat = re.sub(r"\s+", "", text)  # narrow cells fold anywhere, even inside a tag
    # Interpreted markup would drop every tag; shown as data, tags survive (folded cells may cut some).
    assert "MARKUP" not in flat or "[boldred]" in flat or "[/boldred]" in flat


@pytest.mark.parametrize("argv", [
    ["report", "{t}"], ["report", "{t}", "--by", "region"], ["report", "{t}", "--by", "module"],
    ["diff", "{t}", "{e}"], ["diff", "{e}", "{t}"], ["gate", "{t}", "--budget", "{b}"],
    ["gate", "{t}", "--budget", "{b}", "--format", "github"], ["gate", "{t}", "--budget", "{b}", "--format", "json"],
    ["gate", "{t}", "--baseline", "{e}"], ["report", "{t}", "--json"],
], ids=lambda a: " ".join(a[:1] + a[2:]))
@pytest.mark.parametrize("columns", ["200", "50"], ids=["wide", "narrow-rows"])
@pytest.mark.parametrize("tty", [False, True], ids=["piped", "terminal"])
def test_hostile_trace_in_every_view(argv, columns, tty, tmp_path: Path, monkeypatch, capsys) -> None:
    t = save(_hostile_trace(), tmp_path / "t.json")
    e = save(factories.trace(), tmp_path / "e.json")
    b = tmp_path / "b.toml"
    b.write_text("[[rules]]\nname = " + json.dumps(EVIL) + "\nmax_copies = 0\n")
    monkeypatch.setenv("COLUMNS", columns)
    if tty:
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
    else:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    code = main([a.format(t=t, e=e, b=b) for a in argv])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    if tty:  # the styles copyhunt sets itself are SGR codes; nothing else may get through
        out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    _assert_data(out)
    _assert_data(err)
    if "--json" not in argv and "json" not in argv:
        assert "\\x1b" in out  # the ESC is there, visible


def test_visible_is_the_one_escaping() -> None:
    assert visible("a\x1b[2Jb\u202ec\nd") == "a\\x1b[2Jb\\u202ec\\x0ad"
    assert visible("a\nb", keep_newlines=True) == "a\nb"
    assert visible("x[a:b:2] [bold]") == "x[a:b:2] [bold]"  # markup is the console's business: it is off


# --- 4. saves never clobber ---------------------------------------------------------------------


def test_concurrent_saves_to_one_name_keep_exactly_one(tmp_path: Path) -> None:
    # The old save checked exists(), wrote a temp file, then os.replace'd over anything created meanwhile:
    # every writer "succeeded" and all but one trace were lost.
    path = tmp_path / "t.json"
    traces = [factories.trace(factories.record(i, 16 * (i + 1))) for i in range(8)]
    barrier = threading.Barrier(len(traces))
    results: list[object] = [None] * len(traces)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = save(traces[i], path)
        except FileExistsError as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(traces))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    winners = [i for i, r in enumerate(results) if isinstance(r, Path)]
    assert len(winners) == 1 and sum(isinstance(r, FileExistsError) for r in results) == len(traces) - 1
    assert load(path).copies[0].bytes == 16 * (winners[0] + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # no temporary file left


def test_a_file_that_appears_during_the_save_is_kept(tmp_path: Path, monkeypatch) -> None:
    import copyhunt.tracefile as tf

    path = tmp_path / "t.json"
    real = tf.tempfile.mkstemp

    def racing_mkstemp(*args, **kwargs):
        path.write_text("theirs")  # another run creates the name between the check and the rename
        return real(*args, **kwargs)

    monkeypatch.setattr(tf.tempfile, "mkstemp", racing_mkstemp)
    with pytest.raises(FileExistsError):
        save(factories.trace(factories.record(0, 16)), path)
    assert path.read_text() == "theirs"


def test_default_names_differ_across_pid_namespaces(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.py").write_text(PROG)
    target = parse_target("prog.py", None, ())
    monkeypatch.setattr(os, "getpid", lambda: 1)  # two containers: both processes are PID 1
    names = {default_output(target, tmp_path).name for _ in range(20)}
    assert len(names) == 20 and all(re.fullmatch(r"copyhunt-prog\.1-[0-9a-f]{8}\.json", n) for n in names)
    assert default_output(target, tmp_path).is_absolute()


def test_two_concurrent_runs_with_one_output_never_both_succeed(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(PROG + "import time\ntime.sleep(1.0)\n")
    procs = [subprocess.Popen([sys.executable, "-m", "copyhunt", "trace", "prog.py", "-o", "t.json", "--json"], cwd=tmp_path,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [0, 2]
    assert len(load(tmp_path / "t.json").copies) == 1


# --- 6. --json is pure; 7. a program that changes directory does not move the trace -----------------

LOUD = PROG + """\
import ctypes, subprocess, sys
os.write(1, b"LEAK-FD\\n")
subprocess.run([sys.executable, "-c", "print('LEAK-CHILD')"])
ctypes.CDLL(None).printf(b"LEAK-C\\n")
print("LEAK-PRINT")
"""


@pytest.mark.parametrize("argv", [["trace", "prog.py", "--json", "-o", "t.json"],
                                  ["gate", "--run", "prog.py", "--budget", "b.toml", "--format", "json", "-o", "t.json"]])
def test_json_stdout_is_only_the_document(argv, tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(LOUD)
    (tmp_path / "b.toml").write_text("[[rules]]\nmax_copies = 5\n")
    r = _cli(argv, tmp_path)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # one strict JSON document and nothing else
    for leak in ("LEAK-FD", "LEAK-CHILD", "LEAK-C", "LEAK-PRINT"):
        assert leak not in r.stdout and leak in r.stderr, leak


def test_json_never_emits_nan() -> None:
    from copyhunt.tracefile import dumps

    bad = factories.trace(factories.copy(0, 16, us=float("nan")))
    with pytest.raises(ValueError):
        dumps(bad)


def test_a_program_that_changes_directory_does_not_move_the_trace(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "prog.py").write_text(PROG + "os.chdir('elsewhere')\n")
    assert main(["trace", "prog.py", "-o", "t.json", "--json"]) == 0
    assert (tmp_path / "t.json").is_file() and not (tmp_path / "elsewhere" / "t.json").exists()
    assert Path.cwd() == tmp_path
    assert capsys.readouterr().err.endswith("copyhunt: trace saved to t.json\n")
