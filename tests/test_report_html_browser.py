"""The HTML report in a real headless browser (Debian's Chromium): loads clean, expands, shows the MoE sites.

No selenium or playwright: Chromium's own `--dump-dom` and `--screenshot` on the page opened with
`#selftest`, which makes the page click through its tree, flame graph and controls and write what it
saw into `<pre id="selftest">`. Console messages (errors, CSP violations) reach Chromium's stderr
log as `CONSOLE` lines; a clean page has none. The two pages load in parallel (a few seconds).

Skipped, with the reason, where no Chromium is installed; `.ci/run` installs it and sets
COPYHUNT_REQUIRE_BROWSER=1 so that CI fails instead of skipping. COPYHUNT_SCREENSHOT_DIR keeps the
screenshots (else they go to pytest's temporary folder).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import factories
from copyhunt.tracefile import load
from copyhunt.report.html import read_bench, render_html
from html_samples import HOSTILE, MOE_BASELINE, bench_doc, load_unchecked, ten_thousand_copies, tiny_png, write_hostile_trace

WINDOW = (1280, 900)


def find_chromium() -> str | None:
    """COPYHUNT_CHROMIUM, else the first Chromium / Chrome on PATH."""
    explicit = os.environ.get("COPYHUNT_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        reason = "no Chromium found (apt-get install chromium, or set COPYHUNT_CHROMIUM): browser tests skipped"
        if os.environ.get("COPYHUNT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason.replace("skipped", "required by COPYHUNT_REQUIRE_BROWSER=1"))
        pytest.skip(reason)
    return binary


class Page:
    """One page as Chromium left it: the self-test's findings, the DOM, console lines, a screenshot."""

    def __init__(self, dom: str, log: str, screenshot: Path) -> None:
        self.dom = dom
        self.console = [line for line in log.splitlines() if ":CONSOLE" in line]
        self.screenshot = screenshot
        m = re.search(r'<pre id="selftest"[^>]*>(.*?)</pre>', dom, re.S)
        self.selftest = json.loads(html.unescape(m.group(1))) if m and m.group(1) else None


@pytest.fixture(scope="module")
def pages(chromium, tmp_path_factory) -> dict[str, Page]:
    """The MoE baseline, and a hostile trace plus 10k copies, each rendered and loaded with #selftest."""
    work = tmp_path_factory.mktemp("browser")
    shots = Path(os.environ.get("COPYHUNT_SCREENSHOT_DIR") or work)
    shots.mkdir(parents=True, exist_ok=True)
    (work / "b.png").write_bytes(tiny_png())
    (work / "b.json").write_text(json.dumps(bench_doc(preset=HOSTILE)))
    hostile = load_unchecked(write_hostile_trace(work / "hostile.json"))
    # One launch per page costs 2-3 s of this 2-core box, so the hostile records ride on the 10k-copy trace.
    hostile_10k = factories.trace(*hostile.read_copies(), *ten_thousand_copies().read_copies(), meta=hostile.meta)
    sources = {
        "moe-baseline": render_html(load(MOE_BASELINE), trace_path="traces/moe-baseline-cpu.json"),
        "hostile-10k": render_html(hostile_10k, trace_path=HOSTILE, bench=read_bench([work / "b.png", work / "b.json"])),
    }
    procs = {}
    for name, text in sources.items():
        page = work / f"{name}.html"
        page.write_text(text, encoding="utf-8")
        args = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions", "--enable-logging=stderr", f"--user-data-dir={work / ('profile-' + name)}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shots / (name + '.png')}", "--dump-dom",
            page.as_uri() + "#selftest",
        ]
        procs[name] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    out = {}
    for name, proc in procs.items():
        try:
            dom, log = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"Chromium did not finish {name}.html within 90 s")
        assert proc.returncode == 0, log[-2000:]
        out[name] = Page(dom, log, shots / f"{name}.png")
    return out


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("name", ["moe-baseline", "hostile-10k"])
def test_page_loads_clean_and_its_tree_expands(pages, name):
    page = pages[name]
    assert page.console == []  # no errors, no CSP violations, no logging at all
    assert page.selftest is not None, "the page's script did not run"
    assert sorted(page.selftest["checks"]) == sorted(
        ["fmt_bytes", "collapse_all", "expand_one", "collapse_one", "expand_all", "flame_drawn", "flame_reveals",
         "show_torch", "metrics", "no_errors"]
    )
    failed = {k: v for k, v in page.selftest["checks"].items() if not v["ok"]}
    assert failed == {} and page.selftest["ok"] is True
    assert page.selftest["errors"] == []


def test_moe_baseline_shows_its_two_sites(pages):
    page = pages["moe-baseline"]
    st = page.selftest
    # First view, torch frames hidden: layer.py:114 -> layer.py:79 -> modular.py:159/160 -> the two sites -> copy_.
    assert st["default_rows"] == [
        "forward copyhunt_moe/layer.py:114",
        "forward copyhunt_moe/layer.py:79",
        "apply copyhunt_moe/modular.py:159",
        "apply copyhunt_moe/modular.py:51 site",
        "copy_ d2d",
        "apply copyhunt_moe/modular.py:160",
        "apply copyhunt_moe/modular.py:86 site",
        "copy_ d2d",
    ]
    assert st["sites_in_view"] == ["copyhunt_moe/modular.py:51", "copyhunt_moe/modular.py:86"]
    assert st["nodes"] == 8 and st["sites_rows"] == 5  # header + 2 sites + their 2 "why" rows
    # The DOM as the screenshot was taken: reasons and suggestions of both sites are on the page.
    text = re.sub(r"<[^>]+>", " ", page.dom)
    for needle in ("copyhunt_moe/modular.py:51 apply", "copyhunt_moe/modular.py:86 apply", "8 of 8 copies",
                   "let aten.sum.IntList_out at torch_experts.py:90 write straight into this copy",
                   "pass this copy's destination to aten.copy_ at modular.py:51 as its output"):
        assert needle in html.unescape(text), needle
    assert png_size(page.screenshot) == WINDOW
    assert page.screenshot.stat().st_size > 20_000  # a drawn page, not a blank one


def test_hostile_text_is_shown_as_text(pages):
    page = pages["hostile-10k"]
    # Nothing from the trace ran or became markup: no title change, no injected element or attribute.
    # The page sets its title from the target, as text: injected markup would have set it to "PWNED".
    title = re.search(r"<title>(.*?)</title>", page.dom, re.S).group(1)
    assert html.unescape(title) == "copyhunt: " + HOSTILE
    assert "data-pwned" not in page.dom
    assert page.dom.count("<img") == 1 and '<img alt="copyhunt bench moe plot' in page.dom  # only the bench plot
    assert page.dom.count("<script") == 2
    # ... and it is on the page, as text (the DOM dump escapes it again).
    assert html.escape(HOSTILE, quote=False) in page.dom
    assert "\\x1b[2J.py" in page.dom and "\\u202emain" in page.dom and "\x1b" not in page.dom
    assert "x = y.clone()  # &lt;b&gt;not bold&lt;/b&gt;" in page.dom
    assert "INCOMPLETE: " in page.dom
    # The bench result: its preset as text, its row as numbers, the plot as a data: URI.
    assert '<p id="bench-info">' + html.escape(HOSTILE, quote=False) + ", 4 layers, cpu, backend torch, CPU smoke run</p>" in page.dom
    assert "<td>eager</td><td class=\"num\">1</td><td class=\"num\">100</td><td class=\"num\">90</td>" in page.dom
    assert '<img alt="copyhunt bench moe plot: time saved and speedup against tokens" src="data:image/png;base64,iVBORw0KGgo' in page.dom


def test_ten_thousand_copies_render_fast(pages):
    st = pages["hostile-10k"].selftest
    # 10k copies: 400 leaves + 200 sites + 5 callers + main; the hostile trace: main, 2 sites, 4 leaves.
    assert st["nodes"] == (40 * 5 * 2 + 40 * 5 + 5 + 1) + (1 + 2 + 4)
    assert st["render_ms"] < 2000, st["render_ms"]
