"""Report-time views on real traced programs: re-attribution, sort, size floor, source lines, Python calls, widths."""

from __future__ import annotations

import os
import re
import sys

import pytest

from copyhunt.cli import main

HELPER = """\
import torch


def widen(x):
    return x.to(torch.float64)
"""

# Line numbers are part of the test: each copy's line is known from this text, not from copyhunt.
SCRIPT = """\
import torch
from chviews_helper import widen

w = torch.ones(8, 4)
a = w.t().contiguous()
b = widen(torch.ones(64))
c = torch.ones(2).clone()
d = torch.ones(16)
d[:4] = torch.zeros(4)
"""
# line 5: .t().contiguous() -> aten.clone, 8*4*4 = 128 B
# line 6: widen() -> chviews_helper.py:5 x.to(float64) -> aten._to_copy, 64*8 = 512 B
# line 7: .clone() -> aten.clone, 8 B
# line 9: d[:4] = ... -> aten.copy_, 16 B


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    (root / "chviews_helper.py").write_text(HELPER)
    (root / "s.py").write_text(SCRIPT)
    old = os.getcwd()
    os.chdir(root)
    try:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        sys.modules.pop("chviews_helper", None)  # a unique name: a script's imports stay in sys.modules
        assert main(["trace", "s.py", "-o", "t.json", "--top", "0"]) == 0
    finally:
        os.chdir(old)
    return root


def _report(traced, monkeypatch, capsys, *args: str, columns: int = 120) -> str:
    monkeypatch.chdir(traced)
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["report", "t.json", "--top", "0", *args]) == 0
    return capsys.readouterr().out


def _sites(out: str) -> list[str]:
    """The site labels of the table's rows, in order (the table body: from its rule to the first blank line)."""
    if "────\n" not in out:
        return []
    body = out.split("────\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^(\S+\.py:\d+)(?: |$)", body, re.M)


def test_default_order_is_by_bytes(traced, monkeypatch, capsys):
    out = _report(traced, monkeypatch, capsys)
    assert _sites(out)[:4] == ["chviews_helper.py:5", "s.py:5", "s.py:9", "s.py:7"]


def test_hide_moves_the_copy_to_its_caller(traced, monkeypatch, capsys):
    out = _report(traced, monkeypatch, capsys, "--hide", "*/chviews_helper.py")
    assert "chviews_helper.py:5" not in _sites(out)
    assert _sites(out)[0] == "s.py:6"  # b = widen(...): the caller is blamed
    assert "filters     hide=*/chviews_helper.py" in out


def test_focus_picks_the_matching_stored_frame(traced, monkeypatch, capsys):
    out = _report(traced, monkeypatch, capsys, "--focus", "*/s.py")
    assert sorted(_sites(out)) == ["s.py:5", "s.py:6", "s.py:7", "s.py:9"]


def test_sort_and_min_bytes(traced, monkeypatch, capsys):
    assert _sites(_report(traced, monkeypatch, capsys, "--sort", "site"))[:4] == ["chviews_helper.py:5", "s.py:5", "s.py:7", "s.py:9"]
    out = _report(traced, monkeypatch, capsys, "--min-bytes", "100")
    assert _sites(out) == ["chviews_helper.py:5", "s.py:5"]
    assert "... 2 source sites under 100 B not shown: 2 copies, 24 B (--min-bytes)" in out
    assert _sites(_report(traced, monkeypatch, capsys, "--min-bytes", "1K")) == []


def test_bad_min_bytes_is_one_line(traced, monkeypatch, capsys):
    monkeypatch.chdir(traced)
    assert main(["report", "t.json", "--min-bytes", "lots"]) == 2
    assert capsys.readouterr().err == "copyhunt report: error: Invalid value for --min-bytes: 'lots' is not a size (e.g. 4096, 64K, 1MiB)\n"


def test_site_filter_still_selects(traced, monkeypatch, capsys):
    assert _sites(_report(traced, monkeypatch, capsys, "--site", "s.py:9")) == ["s.py:9"]


def test_source_lines_and_python_calls_under_sites(traced, monkeypatch, capsys):
    out = _report(traced, monkeypatch, capsys)
    lines = out.splitlines()

    def under(site: str) -> list[str]:
        i = next(n for n, ln in enumerate(lines) if ln.startswith(site + " "))
        return [ln.split("  ")[1] if ln.startswith("  ") else ln for ln in lines[i + 1 : i + 3]]

    assert under("s.py:5")[0].strip() == "a = w.t().contiguous()"
    assert under("s.py:5")[1].strip() == "(.contiguous() runs clone)"
    assert under("chviews_helper.py:5")[0].strip() == "return x.to(torch.float64)"
    assert under("chviews_helper.py:5")[1].strip() == "(.to() runs _to_copy)"
    assert under("s.py:9")[1].strip() == "([...] = runs copy_)"
    assert under("s.py:7")[0].strip() == "c = torch.ones(2).clone()"  # the op's own name: no note
    assert not under("s.py:7")[1].strip().startswith("(")


def test_no_row_starts_with_a_function_name_at_80_columns(traced, monkeypatch, capsys):
    # Every line of the table body starts with a site path (a new row) or with indentation.
    out = _report(traced, monkeypatch, capsys, columns=80)
    body = out.split("────\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert body and all(re.match(r"(\S+\.py:\d+|  \S)", ln) for ln in body), body
    assert max(len(ln.rstrip()) for ln in out.splitlines()) <= 80


def test_site_column_is_not_padded_at_140_columns(traced, monkeypatch, capsys):
    out = _report(traced, monkeypatch, capsys, columns=140)
    header = next(ln for ln in out.splitlines() if ln.startswith("Source site"))
    body = out.split("────\n", 1)[1].split("\n\n", 1)[0].splitlines()
    widest = max(len(re.split(r"\s{2,}", ln.strip())[0]) + (2 if ln.startswith("  ") else 0) for ln in body)
    assert header.index(" Op ") + 1 == widest + 2  # the site column is as wide as its widest line, 2 spaces between
    assert widest < 40


def test_verdict_reasons_name_buffers_by_where_they_were_made(traced, monkeypatch, capsys):
    out = _report(traced, monkeypatch, capsys)
    assert not re.search(r"#\d", out.split("Why they look eliminable:", 1)[-1])
