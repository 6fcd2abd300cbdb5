"""The real entry points, in subprocesses: `python -m copyhunt` and the `copyhunt` console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="100", CUDA_VISIBLE_DEVICES="")  # CPU only: no device capture here
    env.pop("NO_COLOR", None)
    return env


def test_python_m_copyhunt_help():
    proc = subprocess.run([sys.executable, "-m", "copyhunt", "--help"], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("trace", "report"):
        assert command in proc.stdout


def test_console_script_trace_json(tmp_path):
    # The console script installed next to this interpreter (pip install -e . puts it there).
    script = Path(sys.executable).parent / ("copyhunt.exe" if os.name == "nt" else "copyhunt")
    assert script.exists(), f"console script not installed at {script}"
    (tmp_path / "s.py").write_text("import torch\nx = torch.ones(4, 8)\ny = x.clone()\nprint('hi')\n")
    proc = subprocess.run(
        [str(script), "trace", "s.py", "--json", "-o", "t.json"],
        cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout is only the document; the target's "hi" went to stderr
    assert doc == json.loads((tmp_path / "t.json").read_text())
    # One clone of 4 x 8 float32 = 128 bytes at line 3.
    assert [(c["op"], c["bytes"], c["site"]["line"]) for c in doc["copies"]] == [("aten.clone.default", 128, 3)]
    assert proc.stderr.startswith("hi\n") and proc.stderr.endswith("copyhunt: trace saved to t.json\n")


def test_a_closed_pipe_keeps_the_commands_exit_code(tmp_path):
    # `copyhunt ... | head`: the reader goes away. rich would exit 1 ("over budget"); the command must
    # instead finish with its own code: report 0, gate over budget 1. The read end is closed before
    # the command writes anything, so its first write always meets a broken pipe.
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    baseline = repo / "traces" / "moe-baseline-cpu.json"
    for args, expected in (
        (["report", str(baseline), "--top", "0"], 0),
        (["gate", str(baseline), "--budget", str(repo / "copyhunt.toml")], 1),
    ):
        proc = subprocess.Popen([sys.executable, "-m", "copyhunt", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=repo)
        assert proc.stdout is not None
        proc.stdout.close()  # the reader is gone, like `| head` after its lines
        proc.wait(timeout=60)
        assert proc.returncode == expected, (args, proc.stderr.read().decode() if proc.stderr else "")


def test_after_torch_compile_the_process_still_ends_as_python_would(tmp_path) -> None:
    # With Inductor loaded, `copyhunt` leaves through copyhunt.cli.exit_after_compile (no C++ teardown,
    # which sometimes aborted): the program's non-daemon threads are still waited for, its atexit
    # handlers still run (after them), and the exit code is copyhunt's.
    import subprocess
    import sys

    prog = tmp_path / "prog.py"
    prog.write_text(
        "import atexit, threading, time\n"
        "import torch._inductor  # what a torch.compile program has loaded\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "def late():\n"
        "    time.sleep(0.5)\n"
        "    print('thread finished', flush=True)\n"
        "threading.Thread(target=late).start()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "copyhunt", "trace", str(prog), "-o", str(tmp_path / "t.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.index("thread finished") < done.stdout.index("atexit ran")
    assert (tmp_path / "t.json").is_file()
    bad = subprocess.run([sys.executable, "-m", "copyhunt", "trace", str(tmp_path / "missing.py")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2  # no Inductor loaded here: the plain exit, same code
