"""Ctrl-C at every phase of `copyhunt trace`, sent as a real SIGINT to a real `python -m copyhunt` process.

Phases are made observable without timing guesses: the program under trace touches a file once its
copies are made, and the runner's test hook (``COPYHUNT_TEST_HOLD=<phase>:<file>``) touches a file
when a phase starts and waits there until the Ctrl-C. Each test then checks the exit code, the one
line on stderr, and the saved file: whole, readable, and marked for what it lacks.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from copyhunt.cli.progress import progress_wanted
from copyhunt.tracefile import load

ROOT = Path(__file__).resolve().parents[1]

# Five clones of 4 x 8 float32 (128 B each), then the ready file, then (with "forever") an endless
# wait: the run phase is interrupted with exactly five copies made.
PROGRAM = """\
import sys, time
from pathlib import Path
import torch
x = torch.ones(4, 8)
keep = [x.clone() for _ in range(5)]   # line 5
Path(sys.argv[1]).touch()
if sys.argv[2:] == ["forever"]:
    while True:
        time.sleep(0.01)
"""


def _start(tmp_path: Path, *, hold: str | None = None, forever: bool = False, stderr: int | None = None,
           extra: tuple[str, ...] = (), env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    (tmp_path / "prog.py").write_text(PROGRAM)
    ready = tmp_path / "ready"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "COPYHUNT_TEST_HOLD")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    args = ["prog.py", str(tmp_path / "program-ran")] + (["forever"] if forever else [])
    if hold is not None:
        env["COPYHUNT_TEST_HOLD"] = f"{hold}:{ready}"
    else:
        args[1] = str(ready)  # the program itself says when its copies are made
    proc = subprocess.Popen(
        [sys.executable, "-m", "copyhunt", "trace", "--no-device-trace", *extra, *args[:1], "-o", "t.json", "--", *args[1:]],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr if stderr is not None else subprocess.PIPE,
    )
    return proc, ready


def _wait_for(path: Path, proc: subprocess.Popen, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"copyhunt exited ({proc.returncode}) before {path.name}: {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} never appeared")
        time.sleep(0.02)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), (err or b"").decode()


def test_ctrl_c_while_the_program_runs_saves_the_partial_trace_and_judges_it(tmp_path):
    proc, ready = _start(tmp_path, forever=True)
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGINT)
    rc, out, err = _finish(proc)
    assert rc == 130, err
    assert "copyhunt: interrupted; saving the partial trace" in err
    trace = load(tmp_path / "t.json")
    assert (trace.meta.complete, trace.meta.error, trace.meta.pending) == (False, "interrupted (KeyboardInterrupt)", ())
    assert [(c.op, c.bytes, c.site.file, c.site.line) for c in trace.copies] == [("aten.clone.default", 128, "prog.py", 5)] * 5
    assert trace.judged  # the analysis ran after the save: nobody interrupted it
    assert "prog.py:5" in out  # and the table was printed


@pytest.mark.parametrize("phase, step", [("judge", "judging"), ("save", "saving")])
def test_ctrl_c_during_analysis_keeps_the_raw_trace_without_verdicts(tmp_path, phase, step):
    proc, ready = _start(tmp_path, hold=phase)
    _wait_for(ready, proc)
    if phase == "judge":
        # stderr is a pipe: held past the 1 s after which a terminal shows a spinner, it gets none.
        time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    rc, out, err = _finish(proc)
    assert rc == 130
    assert err == f"copyhunt: interrupted while {step}; t.json holds the trace saved before, without verdicts\n"
    assert out == ""  # no table for an analysis that did not finish
    trace = load(tmp_path / "t.json")
    assert trace.findings is None and trace.meta.pending == ("verdicts",)
    assert trace.meta.complete is True  # the program itself finished
    assert len(trace.copies) == 5 and len(trace.ops) >= 5
    assert not any(p.name.startswith(".t.json.") for p in tmp_path.iterdir())  # no temporary file left behind


def test_ctrl_c_while_the_raw_trace_is_written_is_held_until_it_is_saved_even_twice(tmp_path):
    proc, ready = _start(tmp_path, hold="save-raw")
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # a second Ctrl-C is held too (or stops what is left): the file survives
    rc, out, err = _finish(proc)
    assert rc == 130
    lines = [line for line in err.splitlines() if line.startswith("copyhunt:")]
    assert lines == [
        "copyhunt: Ctrl-C: writing the trace first (it takes seconds), then stopping",
        "copyhunt: interrupted; t.json holds the trace without verdicts",
    ]
    trace = load(tmp_path / "t.json")
    assert trace.findings is None and trace.meta.pending == ("verdicts",) and len(trace.copies) == 5


# --- progress: drawn on a terminal only ------------------------------------------------------------


class _Tty:
    def isatty(self) -> bool:
        return True


class _Pipe:
    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize(
    "json_output, stream, env, wanted",
    [
        (False, _Tty(), {}, True),
        (True, _Tty(), {}, False),  # --json: stdout is the document, stderr stays quiet too
        (False, _Pipe(), {}, False),  # piped or redirected
        (False, _Tty(), {"CI": "true"}, False),  # CI logs are not terminals, whatever they claim
        (False, _Tty(), {"CI": ""}, True),  # an empty CI is unset
    ],
)
def test_progress_is_wanted_on_a_terminal_only(json_output, stream, env, wanted):
    assert progress_wanted(json_output=json_output, stream=stream, env=env) is wanted


def test_a_long_judge_shows_progress_on_a_terminal(tmp_path):
    # stderr on a pseudo-terminal: the spinner line appears once the phase has run for a second.
    master, slave = pty.openpty()
    proc, ready = _start(tmp_path, hold="judge", stderr=slave, env_extra={"TERM": "xterm"})
    os.close(slave)
    _wait_for(ready, proc)
    seen = b""
    deadline = time.monotonic() + 60
    while b"judging 5 copies" not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            seen += os.read(master, 4096)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    os.close(master)
    assert b"copyhunt: judging 5 copies" in seen
