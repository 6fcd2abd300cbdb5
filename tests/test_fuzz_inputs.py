"""Fuzz suite: every malformed input is one line on stderr and exit 2, never a traceback (issue 18).

A generated, seeded corpus of malformed traces (wrong types, bad values, deep nesting, huge numbers,
truncation, foreign schemas), budgets, foreign profiler files (rocprofv3 CSV / JSON, rocpd, Chrome) and
bad flags. Most cases run in-process through the CLI entry (``copyhunt.cli.main``), a few as real
subprocesses (the console script's own exit path, /dev/zero and a FIFO).
"""

from __future__ import annotations

import copy as copy_module
import gzip
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import factories
from copyhunt.cli import main
from copyhunt.records import DeviceTiming, Finding, Frame, StorageInfo, OpRecord, Access
from copyhunt.tracefile import save, to_json

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "traces" / "rocprof-synthetic"
SEED = 18


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line(code: int, err: str, expected: int = 2) -> None:
    assert "Traceback" not in err, err
    assert code == expected, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert re.match(r"copyhunt( [\w-]+)*: error: ", err), repr(err)  # `copyhunt report: error:` for a bad flag
    assert "\x1b" not in err


# --- traces ------------------------------------------------------------------------------------


def _base_doc() -> dict[str, Any]:
    site = Frame("/repo/m.py", 3, "f", source_text="y = x.clone()")
    t = factories.trace(
        factories.copy(0, 64, site=site, verdict="defensive-clone", reason="r", suggestion="s", us=1.5),
        factories.copy(1, 32, site=site, kind="h2d", src_device="cpu", dst_device="cuda:0"),
        ops=(OpRecord(0, "aten.clone.default", reads=(Access(0, 0, 64, True),), writes=(Access(1, 0, 64, True),)),),
        storages=(StorageInfo(0, "cpu", 64, True),),
    )
    return to_json(t)


#: (where, bad value): each makes the document invalid (a wrong type or an impossible value).
_COPY_BAD = {
    "bytes": ["abc", -10**9, -1, 1.5, None, True, [], {}],
    "op": [3, None, [], {}],
    "seq": ["x", -2, 2.5, None],
    "kind": ["zzz", 1, None, ""],
    "noop": ["yes", 1, None],
    "shape": ["abc", [-1], ["a"], [1.5], 7],
    "site": ["here", 3, [], {"file": "a.py", "line": -5, "function": "f"}, {"file": 3, "line": 1, "function": "f"},
             {"file": "a.py", "line": "x", "function": "f"}, {"file": "a.py", "line": 1, "function": "f", "source_text": 5}],
    "origin": ["elsewhere", 3],
    "dtype": [3, None],
    "stack": [3, ["x"], [{"file": "a.py"}]],
    "src_storages": [["a"], [-2], "x", [1.5]],
    "module": [3, []],
}
_DOC_BAD: dict[str, list[Any]] = {
    "meta": [3, "x", [], {"complete": "no"}, {"duration_s": -1}, {"argv": "notalist"}, {"argv": [3]},
             {"device": 7}, {"view": 3}, {"gpu_time_us": "fast"}],
    "copies": [3, "x", {"a": 1}, [3]],
    "timings": [3, [{"copy": 0, "name": "n", "time_us": "slow"}], [{"copy": 0, "name": "n", "time_us": -1.0}],
                [{"copy": 9, "name": "n", "time_us": 1.0}], [{"copy": "x", "name": "n", "time_us": 1.0}],
                [{"copy": 0, "name": "n", "time_us": 1.0, "bytes": -3}], [{"copy": 0}]],
    "findings": [3, [{"copy": 0, "verdict": "maybe", "reason": "r", "suggestion": "s"}], [{"copy": 0}], ["x"]],
    "verifications": [[{"copy": 0, "status": "proven", "detail": "d"}], [{"copy": 0, "status": "verified", "detail": "d", "seq": -2}]],
    "ops": [3, [{"seq": "x", "op": "o"}], [{"seq": 0, "op": "o", "reads": [[0, 0]]}], [{"seq": 0, "op": "o", "reads": [[0, -4, 8, True]]}]],
    "storages": [3, [{"id": -2, "device": "cpu", "nbytes": 1, "alive_at_end": True}], [{"id": 0}],
                 [{"id": 0, "device": "cpu", "nbytes": "big", "alive_at_end": True}]],
    "schema": ["copyhunt.trace/²", "copyhunt.trace/x", "copyhunt.trace/99", "other/1", 3, None, "copyhunt.trace/" + "9" * 50],
}


def _trace_corpus() -> list[tuple[str, bytes]]:
    """Every single-field mutation above, plus a seeded sample of double mutations and text damage."""
    rng = random.Random(SEED)
    base = _base_doc()
    cases: list[tuple[str, bytes]] = []
    for key, values in _COPY_BAD.items():
        for n, value in enumerate(values):
            doc = copy_module.deepcopy(base)
            doc["copies"][rng.randrange(2)][key] = value
            cases.append((f"copy-{key}-{n}", json.dumps(doc).encode()))
    for key, values in _DOC_BAD.items():
        for n, value in enumerate(values):
            doc = copy_module.deepcopy(base)
            if key == "meta" and isinstance(value, dict):
                doc["meta"].update(value)
            else:
                doc[key] = value
            cases.append((f"doc-{key}-{n}", json.dumps(doc).encode()))
    for n in range(12):  # two random bad fields at once
        doc = copy_module.deepcopy(base)
        for key in rng.sample(sorted(_COPY_BAD), 2):
            doc["copies"][rng.randrange(2)][key] = rng.choice(_COPY_BAD[key])
        cases.append((f"copy-pair-{n}", json.dumps(doc).encode()))
    text = json.dumps(base)
    for n in range(6):  # truncated at a random point
        cases.append((f"truncated-{n}", text[: rng.randrange(1, len(text) - 1)].encode()))
    cases += [
        ("nan-bytes", text.replace('"bytes": 64', '"bytes": NaN').encode()),
        ("inf-time", text.replace('"time_us": 1.5', '"time_us": Infinity').encode()),
        ("huge-int", text.replace('"bytes": 64', '"bytes": ' + "9" * 5000).encode()),
        ("big-int", text.replace('"bytes": 64', '"bytes": ' + "9" * 60).encode()),
        ("deep-array", ("[" * 5000 + "]" * 5000).encode()),
        ("deep-in-meta", text.replace('"meta": {', '"meta": {"x": ' + "[" * 3000 + "]" * 3000 + ", ").encode()),
        ("deep-moderate", text.replace('"meta": {', '"meta": {"x": ' + "[" * 200 + "]" * 200 + ", ").encode()),
        ("not-utf8", b'{"schema": "copyhunt.trace/2", "meta": {"target": "\xff\xfe"}}'),
        ("empty", b""),
        ("null", b"null"),
        ("list", b"[1, 2]"),
        ("string", b'"copyhunt"'),
        ("binary", bytes(range(256))),
    ]
    return cases


TRACE_CASES = _trace_corpus()


@pytest.mark.parametrize("name,data", TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
def test_malformed_trace_is_one_line(name: str, data: bytes, tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(data)
    code, out, err = _run(["report", str(path)], capsys)
    _assert_one_line(code, err)
    assert out == ""


def test_the_corpus_is_big_and_the_base_is_valid(tmp_path: Path, capsys) -> None:
    # The suite proves something only if the unmutated document is accepted.
    assert len(TRACE_CASES) >= 120
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_base_doc()))
    code, out, err = _run(["report", str(path)], capsys)
    assert code == 0 and "m.py:3" in out, err


def test_gate_on_a_malformed_trace_never_passes(tmp_path: Path, capsys) -> None:
    # bytes = -10**9 used to pass max_bytes = "1 KiB" (the table showed -999994880 B / 1.0 KiB).
    doc = _base_doc()
    doc["copies"][0]["bytes"] = -(10**9)
    (tmp_path / "t.json").write_text(json.dumps(doc))
    (tmp_path / "b.toml").write_text('[[rules]]\nmax_bytes = "1 KiB"\n')
    code, out, err = _run(["gate", str(tmp_path / "t.json"), "--budget", str(tmp_path / "b.toml")], capsys)
    _assert_one_line(code, err)
    assert "copies[0].bytes must be an integer >= 0, got -1000000000" in err


def test_diff_with_nan_bytes_is_refused(tmp_path: Path, capsys) -> None:
    # A NaN byte count made `diff --fail-on-increase` exit 0.
    text = json.dumps(_base_doc())
    (tmp_path / "a.json").write_text(text)
    (tmp_path / "b.json").write_text(text.replace('"bytes": 64', '"bytes": NaN'))
    code, out, err = _run(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--fail-on-increase"], capsys)
    _assert_one_line(code, err)
    assert "NaN is not a JSON number" in err


# --- budgets -----------------------------------------------------------------------------------


_BUDGETS = [
    ("not-toml", "[[rules]\nmax_copies = 1"),
    ("deep", "x = " + "[" * 5000 + "]" * 5000),
    ("deep-tables", "[[rules]]\nmax_copies = 1\nname = 'n'\n[rules.x]\n" + "a = {b = " * 100 + "1" + "}" * 100),
    ("huge-int", "[[rules]]\nmax_bytes = " + "9" * 5000),
    ("huge-int-copies", "[[rules]]\nmax_copies = " + "9" * 100),
    ("huge-string", "[[rules]]\nmax_bytes = '" + "9" * 5000 + " KiB'"),
    ("negative", "[[rules]]\nmax_bytes = -1"),
    ("float", "[[rules]]\nmax_copies = 1.5"),
    ("nan-headroom", "headroom = nan\n[[rules]]\nmax_copies = 1"),
    ("inf-headroom", "headroom = inf\n[[rules]]\nmax_copies = 1"),
    ("huge-headroom", "headroom = " + "9" * 100 + "\n[[rules]]\nmax_copies = 1"),
    ("bool", "[[rules]]\nmax_copies = true"),
    ("unknown-key", "[[rules]]\nmax_copies = 1\nmax_bananas = 2"),
    ("no-rules", "headroom = 1"),
    ("rules-not-array", "rules = 3"),
    ("bad-kind", "[[rules]]\nmax_copies = 1\nkind = 'zzz'"),
    ("empty-name", "[[rules]]\nmax_copies = 1\nname = ''"),
    ("allow-no-reason", "[[rules]]\nmax_copies = 1\n[[allow]]\nsite = 'x'"),
    ("not-utf8", b"[[rules]]\nname = '\xff'\nmax_copies = 1"),
    ("big-file", "# " + "x" * (2 << 20)),
]


@pytest.mark.parametrize("name,text", _BUDGETS, ids=[b[0] for b in _BUDGETS])
def test_malformed_budget_is_one_line(name: str, text: str | bytes, tmp_path: Path, capsys) -> None:
    (tmp_path / "t.json").write_text(json.dumps(_base_doc()))
    budget = tmp_path / "b.toml"
    budget.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, out, err = _run(["gate", str(tmp_path / "t.json"), "--budget", str(budget)], capsys)
    _assert_one_line(code, err)
    assert out == ""


# --- foreign profiler files ----------------------------------------------------------------------


def _csv(tmp: Path, mutate: Callable[[bytes], bytes]) -> Path:
    p = tmp / "memory_copy_trace.csv"
    p.write_bytes(mutate((FIX / "memory_copy_trace.csv").read_bytes()))
    return p


def _rocjson(tmp: Path, mutate: Callable[[dict], None]) -> Path:
    doc = json.loads((FIX / "results.json").read_text())
    mutate(doc)
    p = tmp / "results.json"
    p.write_text(json.dumps(doc))
    return p


def _rocpd(tmp: Path, sql: str) -> Path:
    p = tmp / "results.db"
    shutil.copy(FIX / "results.db", p)
    con = sqlite3.connect(p)
    con.execute(sql)
    con.commit()
    con.close()
    return p


def _chrome(tmp: Path, mutate: Callable[[dict], None]) -> Path:
    doc = json.loads(gzip.decompress((ROOT / "traces" / "kineto-h200" / "clone_cat.json.gz").read_bytes()))
    mutate(doc)
    p = tmp / "chrome.json"
    p.write_text(json.dumps(doc))
    return p


def _tool(doc: dict) -> dict:
    return doc["rocprofiler-sdk-tool"][0]


def _set_all(events: list, key: str, value: Any) -> None:
    for ev in events:
        if isinstance(ev, dict) and key in ev:
            ev[key] = value


_FOREIGN: list[tuple[str, Callable[[Path], Path]]] = [
    ("csv-not-utf8", lambda t: _csv(t, lambda b: b.replace(b"HOST_TO_DEVICE", b"HOST_\xff\xfe_DEVICE", 1))),
    ("csv-huge-field", lambda t: _csv(t, lambda b: b.replace(b"HOST_TO_DEVICE", b'"' + b"x" * (128 << 10) + b'"', 1))),
    ("csv-bad-start", lambda t: _csv(t, lambda b: b.replace(b"1000000000,", b"abc,", 1))),
    ("csv-nan-start", lambda t: _csv(t, lambda b: b.replace(b"1000000000,", b"nan,", 1))),
    ("csv-bad-direction", lambda t: _csv(t, lambda b: b.replace(b"HOST_TO_DEVICE", b"SIDEWAYS", 1))),
    ("csv-short-row", lambda t: _csv(t, lambda b: b + b"MEMORY_COPY,HOST_TO_DEVICE\n")),
    ("rocjson-tool-string", lambda t: _rocjson(t, lambda d: d.update({"rocprofiler-sdk-tool": "x"}))),
    ("rocjson-records-list", lambda t: _rocjson(t, lambda d: _tool(d).update({"buffer_records": []}))),
    ("rocjson-copies-dict", lambda t: _rocjson(t, lambda d: _tool(d)["buffer_records"].update({"memory_copy": {"a": 1}}))),
    ("rocjson-copy-string", lambda t: _rocjson(t, lambda d: _tool(d)["buffer_records"].update({"memory_copy": ["x"]}))),
    ("rocjson-start-string", lambda t: _rocjson(t, lambda d: _set_all(_tool(d)["buffer_records"]["memory_copy"], "start_timestamp", "abc"))),
    ("rocjson-bytes-negative", lambda t: _rocjson(t, lambda d: _set_all(_tool(d)["buffer_records"]["memory_copy"], "bytes", -5))),
    ("rocjson-agents-int", lambda t: _rocjson(t, lambda d: _tool(d).update({"agents": 3}))),
    ("rocpd-start-text", lambda t: _rocpd(t, "UPDATE memory_copies SET start = 'abc'")),
    ("rocpd-size-negative", lambda t: _rocpd(t, "UPDATE memory_copies SET size = -7")),
    ("rocpd-no-table", lambda t: _rocpd(t, "DROP TABLE memory_copies")),
    ("chrome-args-list", lambda t: _chrome(t, lambda d: _set_all(d["traceEvents"], "args", [1, 2]))),
    ("chrome-ts-string", lambda t: _chrome(t, lambda d: _set_all(d["traceEvents"], "ts", "abc"))),
    ("chrome-dur-negative", lambda t: _chrome(t, lambda d: _set_all(d["traceEvents"], "dur", -5))),
    ("chrome-events-dict", lambda t: _chrome(t, lambda d: d.update({"traceEvents": {"a": 1}}))),
    ("chrome-event-string", lambda t: _chrome(t, lambda d: d.update({"traceEvents": ["x", 3]}))),
    ("chrome-gz-truncated", lambda t: (t / "c.json.gz").write_bytes(gzip.compress(b'{"traceEvents": [' * 3)[:-8]) or (t / "c.json.gz")),
]


@pytest.mark.parametrize("name,make", _FOREIGN, ids=[f[0] for f in _FOREIGN])
def test_malformed_foreign_file_is_one_line(name: str, make: Callable[[Path], Path], tmp_path: Path, capsys) -> None:
    path = make(tmp_path)
    code, out, err = _run(["report", str(path)], capsys)
    _assert_one_line(code, err)


def test_the_foreign_fixtures_themselves_load(capsys) -> None:
    for p in (FIX / "memory_copy_trace.csv", FIX / "results.json", FIX / "results.db", ROOT / "traces" / "kineto-h200" / "clone_cat.json.gz"):
        code, out, err = _run(["report", str(p)], capsys)
        assert code == 0, (p, err)


# --- files that are not files, and outputs that cannot be written ----------------------------------


def test_non_regular_files_are_refused_at_once(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        code, out, err = _run(["report", path], capsys)
        _assert_one_line(code, err)
    (tmp_path / "t.json").write_text(json.dumps(_base_doc()))
    code, out, err = _run(["gate", str(tmp_path / "t.json"), "--budget", "/dev/zero"], capsys)
    _assert_one_line(code, err)
    code, out, err = _run(["gate", str(tmp_path / "t.json"), "--budget", str(fifo)], capsys)
    _assert_one_line(code, err)


def test_unreadable_file_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps(_base_doc()))
    p.chmod(0)
    if os.access(p, os.R_OK):
        # Root reads every file (CI runs as root): refuse this one the way the kernel would for a user.
        real_open = os.open

        def refusing_open(path, *args, **kwargs):
            if os.fspath(path) == str(p):
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
    code, out, err = _run(["report", str(p)], capsys)
    _assert_one_line(code, err)
    assert "Permission denied" in err or "permission" in err.lower()


def test_perfetto_into_a_missing_folder_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "t.json").write_text(json.dumps(_base_doc()))
    (tmp_path / "file").write_text("x")
    code, out, err = _run(["report", str(tmp_path / "t.json"), "--perfetto", str(tmp_path / "file" / "dir" / "x.json")], capsys)
    _assert_one_line(code, err)
    assert "--perfetto" in err


# --- flags -------------------------------------------------------------------------------------


_FLAGS = [
    ["report", "--bogus", "x"],
    ["report"],
    ["report", "t.json", "--top", "abc"],
    ["report", "t.json", "--by", "planet"],
    ["report", "t.json", "--kind", "zzz"],
    ["gate", "t.json", "--format", "xml"],
    ["gate", "t.json", "--fail-on-increase"],
    ["gate"],
    ["gate", "a.json", "b.json"],
    ["diff", "a.json"],
    ["trace", "--kind", "d2d,zzz", "x.py"],
    ["trace", "no_such_script_here.py"],
    ["nosuchcommand"],
    ["report", "t.json", "--bench", "x.json"],
]


@pytest.mark.parametrize("argv", _FLAGS, ids=[" ".join(a) for a in _FLAGS])
def test_bad_flags_are_one_line(argv: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text(json.dumps(_base_doc()))
    code, out, err = _run(argv, capsys)
    _assert_one_line(code, err)


# --- a few as real processes (the console entry's own exit path) -----------------------------------


def test_subprocess_bad_inputs_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 5000 + "]" * 5000)
    (tmp_path / "b.toml").write_text("[[rules]]\nmax_bytes = " + "9" * 5000)
    (tmp_path / "t.json").write_text(json.dumps(_base_doc()))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv in (["report", "deep.json"], ["report", "/dev/zero"], ["gate", "t.json", "--budget", "b.toml"], ["report", "--nope"]):
        r = subprocess.run([sys.executable, "-m", "copyhunt", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (argv, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (argv, r.stderr)
