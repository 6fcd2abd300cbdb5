"""`copyhunt report TRACE --html OUT.html`: the page's data, its escaping, its size, the writer and the CLI.

The page itself (its script in a real browser) is tested in test_report_html_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from html_samples import HOSTILE, MOE_BASELINE, MOE_H200, ROOT, bench_doc, copy, load_unchecked, ten_thousand_copies, tiny_png, write_hostile_trace

from copyhunt.cli import main
import factories
from copyhunt.records import DeviceTiming, Frame, Trace, TraceMeta
from copyhunt.tracefile import load, save
from copyhunt.errors import OutputExistsError, TraceFormatError
from copyhunt.report.html import BenchFileError, OutputWriteError, embed_json, read_bench, render_html, write_html
from copyhunt.report.html_data import MAX_STACKS, MAX_TEXT, clean_text, report_data

DATA_BLOCK = re.compile(r'<script type="application/json" id="copyhunt-data">(.*?)</script>', re.S)


def page_data(page: str) -> dict:
    """The JSON data block of a rendered page, parsed as the browser parses it."""
    blocks = DATA_BLOCK.findall(page)
    assert len(blocks) == 1
    return json.loads(blocks[0])




# --- data -------------------------------------------------------------------------------------


def test_moe_baseline_data_is_two_stacks_of_four_copies():
    data = report_data(load(MOE_BASELINE), cwd=str(ROOT))
    t = data["totals"]
    # 4 layers x 2 copies of 4 tokens x 64 bf16 (512 B each): 8 copies, 4096 B, all fresh-temporary.
    assert (t["copies"], t["noop"], t["bytes"], t["elim"], t["elim_bytes"], t["us"]) == (8, 0, 4096, 8, 4096, None)
    assert t["by_verdict"] == [["fresh-temporary", 8, 4096, None]]
    assert data["timed"] is False and data["judged"] is True
    frames = data["frames"]
    sites = [f"{frames[s['s']][0]}:{frames[s['s']][1]} {frames[s['s']][2]}" for s in data["stacks"]]
    assert sites == ["copyhunt_moe/modular.py:51 apply", "copyhunt_moe/modular.py:86 apply"]
    for s in data["stacks"]:
        assert (s["op"], s["kind"], s["v"], s["n"], s["b"], s["e"]) == ("copy_", "d2d", "fresh-temporary", 4, 2048, 4)
        assert s["m"] == [f"MoEStack.layers.{i}" for i in range(4)]
        assert s["f"][-1] == s["s"]  # outermost first: the site is the innermost frame
    # The stored stacks hold 8 frames each; 3 distinct torch module.py frames, flagged so the page can hide them.
    outer = data["stacks"][0]["f"]
    assert [frames[i][2] for i in outer] == ["inner", "forward", "_wrapped_call_impl", "_call_impl", "inner", "forward", "apply", "apply"]
    assert [frames[i][3] for i in outer] == [1, 0, 1, 1, 1, 0, 0, 0]


def test_device_time_and_gpu_share_from_the_h200_trace():
    data = report_data(load(MOE_H200))
    t = data["totals"]
    trace = load(MOE_H200)
    us = sum(c.device.time_us for c in trace.read_copies())
    assert data["timed"] is True and t["us"] == pytest.approx(us) and t["elim_us"] == pytest.approx(us)
    assert data["meta"]["gpu_us"] == 516.508
    assert round(t["us"], 1) == 8.5  # README: 8.5 us of device time in all
    assert [s["n"] for s in data["stacks"]] == [4, 4]


def test_copies_fold_by_stack_op_kind_and_verdict():
    a, b = Frame("m.py", 10, "f"), Frame("m.py", 20, "g")
    caller = Frame("main.py", 3, "main")
    copies = [
        copy(1, a, stack=(a, caller), verdict="needed", device=DeviceTiming("k", 2.0)),
        copy(2, a, stack=(a, caller), verdict="needed", device=DeviceTiming("k", 3.0), module="net.0"),
        copy(3, a, stack=(a, caller), verdict="dead-store", reason="r3", suggestion="s3"),
        copy(4, b, stack=(b, caller), nbytes=4096, noop=True, op="aten.copy_.default"),
        copy(5, None, nbytes=8),
    ]
    data = report_data(factories.trace(*copies, meta=TraceMeta(target="t")))
    rows = [(s["op"], s["v"], s["n"], s["z"], s["b"], s["t"], s["e"], s["r"]) for s in data["stacks"]]
    # Sorted by bytes: a/needed 2048 B, a/dead-store 1024 B, no-site 8 B, then the noop (moves 0 bytes).
    assert rows == [
        ("clone", "needed", 2, 0, 2048, 5.0, 0, None),
        ("clone", "dead-store", 1, 0, 1024, None, 1, "r3"),
        ("clone", None, 1, 0, 8, None, 0, None),
        ("copy_", None, 1, 1, 0, None, 0, None),
    ]
    assert data["stacks"][2]["f"] == [] and data["stacks"][2]["s"] == -1
    assert data["stacks"][0]["m"] == ["net.0"] and data["stacks"][1]["g"] == "s3"
    t = data["totals"]
    assert (t["copies"], t["noop"], t["bytes"], t["us"], t["elim"], t["elim_bytes"], t["elim_us"]) == (5, 1, 3080, 5.0, 1, 1024, 0.0)
    assert t["by_verdict"] == [["dead-store", 1, 1024, None], ["needed", 2, 2048, 5.0]]


def test_stacks_beyond_the_limit_are_summed_not_shipped():
    copies = [copy(i, Frame("m.py", i + 1, "f"), nbytes=4 * (i + 1)) for i in range(MAX_STACKS + 3)]
    data = report_data(factories.trace(*copies))
    assert len(data["stacks"]) == MAX_STACKS
    # The 3 smallest (4, 8 and 12 bytes) are left out; the totals still count them.
    assert data["totals"]["left_out"] == {"stacks": 3, "copies": 3, "bytes": 24}
    assert data["totals"]["copies"] == MAX_STACKS + 3


def test_ten_thousand_copies_make_a_small_page():
    big = render_html(ten_thousand_copies(10_000))
    small = render_html(ten_thousand_copies(1_000))
    data = page_data(big)
    assert len(data["stacks"]) == 400  # 40 sites x 5 callers x 2 verdicts
    assert data["totals"]["copies"] == 10_000
    # The page grows with distinct stacks, not copies: 10x the copies, within 5% of the size
    # (only the digits of counts and of the first reason's buffer number grow).
    assert len(big) < 1.05 * len(small)
    assert len(big) < 200_000, len(big)  # docs/cli.md: about 150 KB


# --- escaping ---------------------------------------------------------------------------------

def test_json_block_cannot_be_closed_by_trace_text():
    text = embed_json({"s": HOSTILE + "\u2028<!--"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"s": HOSTILE + "\u2028<!--"}
    assert text.isascii()


def test_clean_text_shows_control_and_bidi_characters():
    assert clean_text("a\x1b[31mred\x07\x00") == "a\\x1b[31mred\\x07\\x00"
    assert clean_text("abc\u202edcba\u2066") == "abc\\u202edcba\\u2066"
    assert clean_text("x" * (MAX_TEXT + 5)) == "x" * MAX_TEXT + "... (5 more characters)"
    assert clean_text(3) == "3"


def test_hostile_trace_text_stays_data(tmp_path):
    path = write_hostile_trace(tmp_path / "hostile.json")
    # The loader refuses its NaN / negative byte counts and non-string ops (one line) ...
    with pytest.raises(TraceFormatError, match="not a trace file"):
        load(path)
    # ... the page must still hold up if such records reach it some other way (built without the checks).
    page = render_html(load_unchecked(path), trace_path=HOSTILE)
    # The page's own two scripts and nothing else; the markup outside the data block is the template's.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "PWNED" not in DATA_BLOCK.sub("", page)
    data = page_data(page)
    frames = data["frames"]
    assert any(f[2] == HOSTILE for f in frames)
    assert data["meta"]["target"] == HOSTILE
    # ESC shown as the 4 characters \x1b; the backslash after it stays one backslash.
    assert data["meta"]["notes"][0] == r"note \x1b]8;;http://evil\x1b\link\x1b]8;;\x1b" + "\\"
    huge = next(f for f in frames if f[2].startswith("yyy"))
    assert huge[2] == "y" * 500 + f"... ({1_000_000 - 500} more characters)"
    assert len(page) < 200_000  # a 1 MB function name does not make a 1 MB page
    # NaN and negative byte counts count as 0 B, an infinite device time as none (the loader lets them through).
    # Device times that are not a measurement (infinite, 1e308 us) count as none.
    rows = [(s["op"], s["v"], s["n"], s["b"], s["t"]) for s in data["stacks"]]
    assert rows == [(HOSTILE, "__proto__", 1, 2**30, None), ("3", None, 3, 192, None), ("__proto__", "needed", 1, 0, None),
                    ("constructor", None, 1, 0, None)]
    assert data["timed"] is False and data["totals"]["bytes"] == 2**30 + 192 and data["meta"]["complete"] is False
    sources = [s["src"] for s in data["stacks"] if s["src"]]
    assert sources == ["x = y.clone()  # <b>not bold</b>"]


def test_page_script_never_parses_markup():
    # The page builds its DOM with textContent and DOM properties only: none of the APIs that parse
    # a string as HTML or code appear in its script, and no inline style or event attribute in its skeleton.
    from copyhunt.report.html import _asset

    js = _asset("report.js")
    for api in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute(\"style"):
        assert api not in js, api
    skeleton = _asset("report.html")
    assert not re.search(r"<[^>]*\s(style|on\w+)=", skeleton)


# --- writing files ----------------------------------------------------------------------------


def test_write_follows_the_umask_and_never_clobbers(tmp_path):
    old = os.umask(0o027)
    try:
        out = write_html("<p>one</p>", tmp_path / "sub" / "r.html")
    finally:
        os.umask(old)
    assert out.read_text() == "<p>one</p>"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # 0666 less umask 027
    with pytest.raises(OutputExistsError) as exc:
        write_html("<p>two</p>", out)
    assert str(exc.value) == f"--html {out}: file exists; pass --force to overwrite it"
    assert out.read_text() == "<p>one</p>"
    old = os.umask(0o022)
    try:
        write_html("<p>two</p>", out, force=True)
    finally:
        os.umask(old)
    assert out.read_text() == "<p>two</p>" and stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]  # no temporary file left behind


def test_unwritable_path_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputWriteError) as exc:
        write_html("x", tmp_path / "file" / "r.html")
    # A file where the folder should be: pathlib's mkdir says "File exists".
    assert str(exc.value) == f"--html {tmp_path / 'file' / 'r.html'}: cannot create its folder (File exists)"
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputWriteError) as exc:
        write_html("x", tmp_path / "dir", force=True)
    assert str(exc.value) == f"--html {tmp_path / 'dir'}: cannot write (Is a directory)"
    assert [p.name for p in (tmp_path / "dir").iterdir()] == [] and sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


# --- bench ------------------------------------------------------------------------------------


def test_bench_json_and_png_are_embedded(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps(bench_doc()))
    (tmp_path / "b.png").write_bytes(tiny_png())
    attachment = read_bench([tmp_path / "b.json", tmp_path / "b.png"])
    data = page_data(render_html(load(MOE_BASELINE), bench=attachment))
    assert data["bench"]["rows"] == [["eager", 1, 100.0, 90.0, 10.0, 1.5, 8.0, 1.25, 10.0, True]]
    assert (data["bench"]["preset"], data["bench"]["layers"], data["bench"]["smoke"]) == ("tiny", 4, True)
    import base64

    assert base64.b64decode(data["plot"]) == tiny_png()


def test_stored_h200_bench_result_and_plot():
    bench = ROOT / "benchmarks" / "bench_moe_h200.json"
    doc = json.loads(bench.read_text())
    attachment = read_bench([ROOT / "benchmarks" / "bench_moe_h200.png", bench])
    data = report_data(load(MOE_H200), bench=attachment)
    # 7 token counts x 2 modes; the first row: graph mode, 1 token, 8.23 us saved (benchmarks/RESULTS.md).
    assert len(data["bench"]["rows"]) == len(doc["rows"]) == 14
    assert data["bench"]["rows"][0][:5] == ["graph", 1, 210.99, 202.71, 8.23]
    assert (data["bench"]["device"], data["bench"]["preset"], data["bench"]["smoke"]) == ("NVIDIA H200", "minimax-m2.5-tp4", False)
    assert data["plot"].startswith("iVBORw0KGgo")  # base64 of the PNG signature


@pytest.mark.parametrize(
    "name",
    ["rocprof-synthetic/memory_copy_trace.csv", "rocprof-synthetic/results.db", "kineto-h200/clone_cat.json.gz", "moe-h200/graph-hunt.json"],
)
def test_imported_and_device_traces_render(name):
    from copyhunt.importers import load_any

    trace = load_any(ROOT / "traces" / name)
    data = page_data(render_html(trace))
    assert data["totals"]["copies"] == len(trace.copies) > 0
    assert sum(s["n"] for s in data["stacks"]) == len(trace.copies)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not json", "neither a PNG nor JSON"),
        (b'{"schema": "copyhunt.trace/1"}', "not a copyhunt bench result"),
        (b"[1, 2]", "not a copyhunt bench result"),
    ],
)
def test_bad_bench_file_is_one_line(tmp_path, content, message):
    (tmp_path / "b").write_bytes(content)
    with pytest.raises(BenchFileError) as exc:
        read_bench([tmp_path / "b"])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_bench_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BenchFileError, match="not a regular file"):
        read_bench([tmp_path / "fifo"])


# --- the command ------------------------------------------------------------------------------


def test_report_html_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(load(MOE_BASELINE), "t.json")
    (tmp_path / "b.png").write_bytes(tiny_png())
    assert main(["report", "t.json", "--html", "r.html", "--bench", "b.png"]) == 0
    out, err = capsys.readouterr()
    assert err == "copyhunt: HTML report written to r.html\n"
    assert "copyhunt_moe/modular.py:51" in out  # the table is printed as without --html
    data = page_data((tmp_path / "r.html").read_text())
    assert data["meta"]["trace_file"] == "t.json" and data["totals"]["copies"] == 8 and data["plot"]
    # An existing file needs --force (checked before any work); exit 2 with one line.
    assert main(["report", "t.json", "--html", "r.html"]) == 2
    assert capsys.readouterr().err == "copyhunt: error: --html r.html: file exists; pass --force to overwrite it\n"
    assert main(["report", "t.json", "--html", "r.html", "--force", "--kind", "h2d"]) == 0
    data = page_data((tmp_path / "r.html").read_text())
    assert data["totals"]["copies"] == 0 and data["meta"]["showing"] == ["kind=h2d"]


def test_report_html_bad_paths_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save(load(MOE_BASELINE), "t.json")
    (tmp_path / "f").write_text("x")
    assert main(["report", "t.json", "--html", "f/r.html"]) == 2
    err = capsys.readouterr().err
    assert err == "copyhunt: error: --html f/r.html: cannot create its folder (File exists)\n"
    assert main(["report", "t.json", "--bench", "b.png"]) == 2
    assert "--bench goes with --html" in capsys.readouterr().err
    assert main(["report", "t.json", "--html", "r.html", "--bench", "missing.png"]) == 2
    assert capsys.readouterr().err == "copyhunt: error: --bench missing.png: cannot read (No such file or directory)\n"
    assert not (tmp_path / "r.html").exists()
