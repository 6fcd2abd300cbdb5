"""`copyhunt trace`, driven in-process through `copyhunt.cli.main`: the three target forms, --json,
error exits, partial traces, output files. Tiny targets (a few small CPU copies), never the MoE demo."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from copyhunt.cli import main
from copyhunt.tracefile import load

# The target scripts below copy a float32 tensor of 4 x 8 = 32 elements: 32 * 4 = 128 bytes per copy.
SCRIPT = """\
import sys
import torch
x = torch.ones(4, 8)
y = x.t().contiguous()  # line 4: one clone, 128 bytes
print("target says", sys.argv[1:])
"""

RAISES = """\
import torch
def step(x):
    y = x.clone()  # line 3: recorded before the failure
    raise ValueError("boom in step")
step(torch.ones(4, 8))
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.chdir(tmp_path)
    # Device capture is a GPU feature; these tests are about the CLI on any machine.
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tpkg(tmp_path, monkeypatch):
    """A package `chtrace` on sys.path: `work.run()` makes one 128-byte copy; `work` is also runnable with -m."""
    write(tmp_path / "chtrace" / "__init__.py", "")
    write(
        tmp_path / "chtrace" / "work.py",
        """\
        import torch
        def run():
            x = torch.ones(4, 8)
            return x.clone()  # line 4
        if __name__ == "__main__":
            run()
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "chtrace" or m.startswith("chtrace.")]:
        del sys.modules[name]


def copies_of(path: str | Path) -> list[tuple[str, str, int, str, int]]:
    """(op, kind, bytes, file name, line) of each copy in a saved trace."""
    trace = load(path)
    return [(c.op, c.kind, c.bytes, os.path.basename(c.site.file), c.site.line) for c in trace.copies if c.site]


def test_script_target(tmp_path, capsys):
    write(tmp_path / "s.py", SCRIPT)
    assert main(["trace", "s.py", "-o", "t.json", "--", "--flag", "7"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("target says ['--flag', '7']\n")  # the program's own output, then the table
    assert copies_of("t.json") == [("aten.clone.default", "d2d", 128, "s.py", 4)]
    trace = load("t.json")
    assert (trace.meta.target, trace.meta.argv, trace.meta.complete) == ("s.py", ("s.py", "--flag", "7"), True)
    assert "s.py:4 <module>" in out and "1 copy, 128 B written" in out
    assert out.endswith("\ntrace file: t.json\n")
    assert err.count("\n") == 1 and err.startswith("copyhunt: next: `copyhunt report t.json")  # one line: what to do next


def test_report_prints_exactly_what_trace_printed(tmp_path, capsys):
    write(tmp_path / "quiet.py", SCRIPT.replace('print("target says", sys.argv[1:])', "pass"))
    assert main(["trace", "quiet.py", "-o", "t.json"]) == 0
    traced = capsys.readouterr().out
    assert main(["report", "t.json"]) == 0
    assert capsys.readouterr().out == traced
    assert main(["trace", "quiet.py", "-o", "t2.json", "--by", "module", "--top", "1"]) == 0
    traced = capsys.readouterr().out
    assert main(["report", "t2.json", "--by", "module", "--top", "1"]) == 0
    assert capsys.readouterr().out == traced


def test_module_target(tpkg, capsys):
    assert main(["trace", "-m", "chtrace.work", "-o", "m.json"]) == 0
    assert copies_of("m.json") == [("aten.clone.default", "d2d", 128, "work.py", 4)]
    assert load("m.json").meta.target == "-m chtrace.work"
    # After --, option-like words are the program's arguments (click hands the first one over as TARGET).
    assert main(["trace", "-m", "chtrace.work", "-o", "m2.json", "--", "--flag", "v"]) == 0
    assert load("m2.json").meta.argv == ("chtrace.work", "--flag", "v")


def test_function_target(tpkg, capsys):
    assert main(["trace", "chtrace.work:run", "-o", "f.json"]) == 0
    assert copies_of("f.json") == [("aten.clone.default", "d2d", 128, "work.py", 4)]
    assert load("f.json").meta.target == "chtrace.work:run"


def test_a_function_targets_result_is_alive_when_the_hunt_ends(tmp_path, monkeypatch, capsys):
    # The result is what the program hands on: a copy into it is not a dead store. (Before issue 11 the
    # runner dropped the result before the hunt's final sweep, and this copy was judged "dead-store".)
    write(tmp_path / "retpkg.py", """\
        import torch
        def made():
            out = torch.empty(4)
            out.copy_(torch.ones(4) * 2)  # line 4: a fresh temporary into the returned buffer
            return out
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["trace", "retpkg:made", "-o", "r.json"]) == 0
    finally:
        sys.modules.pop("retpkg", None)
    (copy,) = load("r.json").read_copies()
    assert (copy.site.line, copy.verdict) == (4, "fresh-temporary")


def test_json_is_the_saved_document_and_target_stdout_goes_to_stderr(tmp_path, capsys):
    write(tmp_path / "s.py", SCRIPT)
    assert main(["trace", "s.py", "--json", "-o", "t.json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads((tmp_path / "t.json").read_text())
    assert out.count("\n") == 1  # one JSON document, nothing else
    assert "target says []" in err
    assert err.endswith("copyhunt: trace saved to t.json\n")


def test_default_output_name_never_clobbers(tmp_path, capsys):
    # copyhunt-<stem>.<pid>-<8 random hex>.json: two runs sharing a PID (two PID namespaces writing one
    # folder) still get two names, and an existing file is never replaced.
    write(tmp_path / "s.py", SCRIPT)
    taken = tmp_path / f"copyhunt-s.{os.getpid()}.json"
    taken.write_text("precious")
    names = []
    for _ in range(2):
        assert main(["trace", "s.py"]) == 0
        out = capsys.readouterr().out
        m = re.search(rf"trace file: (copyhunt-s\.{os.getpid()}-[0-9a-f]{{8}}\.json)\n$", out)
        assert m, out[-200:]
        names.append(m.group(1))
    assert names[0] != names[1]
    assert taken.read_text() == "precious"
    assert all(load(tmp_path / n) is not None for n in names)


def test_existing_output_is_untouched_without_force(tmp_path, capsys):
    write(tmp_path / "s.py", SCRIPT)
    (tmp_path / "t.json").write_text("precious")
    assert main(["trace", "s.py", "-o", "t.json"]) == 2
    out, err = capsys.readouterr()
    assert err == "copyhunt: error: -o t.json: file exists; pass --force to overwrite it\n"
    assert "target says" not in out  # refused before running anything
    assert (tmp_path / "t.json").read_text() == "precious"
    assert main(["trace", "s.py", "-o", "t.json", "--force"]) == 0
    assert copies_of("t.json") == [("aten.clone.default", "d2d", 128, "s.py", 4)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trace", "missing.py"], "no such script: missing.py"),
        (["trace", "-m", "no_such_module_xyz"], "no module named 'no_such_module_xyz' (is it installed, or on sys.path?)"),
        (["trace", "chtrace.work:nothing"], "module 'chtrace.work' has no function 'nothing'"),
        (["trace", "s.py", "--kind", "d2d,bogus"], "--kind 'bogus' is not a copy kind (valid: d2d, h2d, d2h, p2p)"),
    ],
)
def test_bad_input_exits_2_in_one_line_without_a_trace(tpkg, capsys, argv, message):
    write(tpkg / "s.py", SCRIPT)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err == f"copyhunt: error: {message}\n"
    assert "target says" not in out
    assert list(tpkg.glob("copyhunt-*.json")) == []


def test_raising_target_exits_3_with_traceback_and_partial_trace(tmp_path, capsys):
    write(tmp_path / "r.py", RAISES)
    assert main(["trace", "r.py", "-o", "r.json"]) == 3
    out, err = capsys.readouterr()
    assert err.startswith("Traceback (most recent call last):\n")
    assert 'r.py", line 4, in step' in err and err.endswith("ValueError: boom in step\n")
    # The runner's own frames are cut: the traceback starts at the user's script.
    assert "tracing.py" not in err and "runpy" not in err and "targets.py" not in err
    trace = load("r.json")
    assert (trace.meta.complete, trace.meta.error) == (False, "ValueError: boom in step")
    assert copies_of("r.json") == [("aten.clone.default", "d2d", 128, "r.py", 3)]
    assert "INCOMPLETE: ValueError: boom in step" in out and out.endswith("trace file: r.json\n")


def test_import_error_inside_the_target_module_is_the_targets_failure(tpkg, capsys):
    write(tpkg / "chtrace" / "broken.py", "import chtrace_missing_dep_xyz\ndef run():\n    pass\n")
    assert main(["trace", "chtrace.broken:run", "-o", "b.json"]) == 3
    err = capsys.readouterr().err
    assert "ModuleNotFoundError: No module named 'chtrace_missing_dep_xyz'" in err and "Traceback" in err
    assert load("b.json").meta.complete is False


def test_ctrl_c_saves_the_partial_trace_and_exits_130(tmp_path, capsys):
    write(tmp_path / "k.py", "import torch\ny = torch.ones(4, 8).clone()\nraise KeyboardInterrupt\n")
    assert main(["trace", "k.py", "-o", "k.json"]) == 130
    assert "copyhunt: interrupted; saving the partial trace" in capsys.readouterr().err
    trace = load("k.json")
    assert trace.meta.complete is False and "interrupted" in (trace.meta.error or "")
    assert copies_of("k.json") == [("aten.clone.default", "d2d", 128, "k.py", 2)]


@pytest.mark.parametrize("code, expected", [("sys.exit(0)", 0), ("sys.exit()", 0), ("sys.exit(5)", 3)])
def test_sys_exit(tmp_path, capsys, code, expected):
    write(tmp_path / "e.py", f"import sys\nimport torch\ntorch.ones(2).clone()\n{code}\n")
    assert main(["trace", "e.py", "-o", "e.json"]) == expected
    trace = load("e.json")
    assert trace.meta.complete is (expected == 0)
    if expected:
        assert capsys.readouterr().err == "copyhunt: target exited with status 5\n"
        assert trace.meta.error == "target exited with status 5"


def test_kind_and_region_are_a_view_recorded_with_the_full_trace(tmp_path, capsys):
    write(
        tmp_path / "f.py",
        """\
        import torch
        import copyhunt
        x = torch.ones(4, 8)
        a = x.clone()                      # line 4: outside the region
        with copyhunt.region("moe"):
            b = x.clone()                  # line 6: inside
            c = x.to(torch.float64)        # line 7: inside, 32 * 8 = 256 bytes
        """,
    )
    assert main(["trace", "f.py", "-o", "r.json", "--region", "moe"]) == 0
    traced = capsys.readouterr().out
    # The file holds every copy; the view is recorded, so `report` shows the region's copies only.
    assert [line for *_, line in copies_of("r.json")] == [4, 6, 7]
    assert load("r.json").meta.view == {"region": "moe"}
    assert "f.py:6 <module>" in traced and "f.py:7 <module>" in traced and "f.py:4 <module>" not in traced
    assert "2 copies, 384 B written" in traced and "filters     region=moe" in traced
    assert main(["report", "r.json"]) == 0
    assert capsys.readouterr().out == traced
    assert main(["trace", "f.py", "-o", "k.json", "--kind", "h2d"]) == 0
    assert len(copies_of("k.json")) == 3
    assert "No copies match the filters." in capsys.readouterr().out


def test_failing_op_traceback_hides_the_tracer(tmp_path, capsys):
    # An op that fails under the dispatch mode: Python without copyhunt would show only the user's
    # frames and the RuntimeError; the tracer's own frames (torch mode plumbing, copyhunt.capture) are cut.
    write(tmp_path / "v.py", "import torch\ndef f():\n    torch.ones(3).view(2, 2)\nf()\n")
    assert main(["trace", "v.py", "-o", "v.json"]) == 3
    err = capsys.readouterr().err
    frames = [line for line in err.splitlines() if line.startswith("  File ")]
    assert [f.rsplit(",", 1)[0].split("line ")[-1] for f in frames] == ["4", "3"]
    assert all("v.py" in f for f in frames)
    assert err.endswith("RuntimeError: shape '[2, 2]' is invalid for input of size 3\n")


def test_error_raised_inside_the_capture_keeps_its_frames():
    import io

    import copyhunt.capture
    from copyhunt.cli.tracing import print_user_traceback

    # A function whose code claims to live in copyhunt/capture: an error raised there is copyhunt's
    # own bug, so its frame must stay visible.
    fake = os.path.join(os.path.dirname(copyhunt.capture.__file__), "fake_dispatch.py")
    namespace: dict = {}
    exec(compile("def boom():\n    raise RuntimeError('ours')\n", fake, "exec"), namespace)
    try:
        namespace["boom"]()
    except RuntimeError as exc:
        out = io.StringIO()
        print_user_traceback(exc, out)
    text = out.getvalue()
    assert f'File "{fake}", line 2, in boom' in text and text.endswith("RuntimeError: ours\n")


def test_json_with_a_raising_target_still_prints_the_partial_document(tmp_path, capsys):
    write(tmp_path / "r.py", RAISES)
    assert main(["trace", "r.py", "--json", "-o", "r.json"]) == 3
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc == json.loads((tmp_path / "r.json").read_text())
    assert (doc["meta"]["complete"], doc["meta"]["error"]) == (False, "ValueError: boom in step")
    assert "ValueError: boom in step" in err and err.endswith("copyhunt: trace saved to r.json\n")


def test_a_failed_run_keeps_no_tensor_alive(tmp_path):
    import gc
    import io
    import weakref

    from copyhunt.cli.tracing import trace_target
    from copyhunt.targets import Target

    write(
        tmp_path / "leak.py",
        "import torch, leak_probe\ndef f():\n    t = torch.ones(8)\n    leak_probe.ref.append(t)\n    raise ValueError('x')\nf()\n",
    )
    probe = type(sys)("leak_probe")
    probe.ref = []
    sys.modules["leak_probe"] = probe
    try:
        run = trace_target(Target("script", "leak.py"), tmp_path / "l.json", stderr=io.StringIO())
        # After the pop, the only strong reference left would be f's frame, via the error's traceback.
        ref = weakref.ref(probe.ref.pop())
        gc.collect()
        assert run.exit_code == 3 and isinstance(run.error, ValueError)
        assert ref() is None
    finally:
        del sys.modules["leak_probe"]


def test_a_finished_run_saves_its_verdicts_with_nothing_pending(tmp_path):
    write(tmp_path / "v.py", "import torch\nx = torch.ones(4, 8)\nkeep = [x.clone() for _ in range(3)]\n")
    assert main(["trace", "v.py", "-o", "v.json"]) == 0
    trace = load("v.json")
    assert trace.meta.pending == () and trace.judged and sorted(trace.findings or {}) == [0, 1, 2]
    assert trace.meta.root == str(tmp_path) and [c.site.file for c in trace.copies] == ["v.py"] * 3
