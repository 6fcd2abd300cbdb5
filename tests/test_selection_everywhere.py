"""One selection, the same copies everywhere: hunt(), report, gate budgets, diff and the pytest plugin.

A small program makes 5 copies (lines of sel_prog.py below); each selector must pick the same lines
in all five front ends, and exactly the lines written here.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

import copyhunt
from copyhunt.cli import main
from copyhunt.pytest_plugin import CopyhuntFixture
from copyhunt.records import Trace
from copyhunt.tracefile import save

PROGRAM = '''\
import torch
import copyhunt

def work():
    x = torch.ones(4)
    with copyhunt.region("decode"):
        with copyhunt.region("moe"):
            x.clone()
            x.to("meta")
        with copyhunt.region("attn"):
            torch.zeros(4).copy_(x)
    with copyhunt.region("prefill"):
        with copyhunt.region("moe"):
            torch.cat([x, x])
    x.clone()
'''
# The copies: line 8 clone d2d decode/moe; 9 _to_copy h2d decode/moe (meta counts as a device);
# 11 copy_ d2d decode/attn; 14 cat d2d prefill/moe; 15 clone d2d outside every region.

SELECTORS = [
    # (hunt / fixture keyword arguments, the lines it selects)
    ({"kind": "d2d"}, [8, 11, 14, 15]),
    ({"kind": "H2D"}, [9]),  # kinds are case-insensitive everywhere
    ({"region": "moe"}, [8, 9, 14]),  # at any nesting level
    ({"region": "decode/*"}, [8, 9, 11]),  # a glob
    ({"kind": "d2d", "region": "moe", "op": "clone"}, [8]),  # the short op form
    ({"op": "aten._to_copy*"}, [9]),
    ({"site": "sel_prog.py:1?"}, [11, 14, 15]),  # file:line over the path as shown
]


@pytest.fixture
def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, Trace, Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "sel_prog.py").write_text(PROGRAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("sel_prog", None)
    prog = importlib.import_module("sel_prog")
    with copyhunt.hunt() as h:
        prog.work()
    save(h.trace, tmp_path / "t.json")
    save(Trace(), tmp_path / "empty.json")
    yield prog, h.trace, tmp_path
    sys.modules.pop("sel_prog", None)


def _flags(sel: dict[str, str]) -> list[str]:
    return [arg for key, value in sel.items() for arg in (f"--{key}", value)]


def _budget(path: Path, sel: dict[str, str]) -> Path:
    keys = "".join(f'{key} = "{value}"\n' for key, value in sel.items())
    path.write_text(f"[[rules]]\n{keys}max_copies = 0\n")
    return path


@pytest.mark.parametrize(("sel", "lines"), SELECTORS, ids=[str(s) for s, _ in SELECTORS])
def test_one_selector_selects_the_same_copies_everywhere(traced, capsys, sel, lines):
    prog, trace, tmp = traced
    expected = Counter(lines)

    # hunt(kinds=..., region=..., site=..., op=...): a view over the full capture.
    kw = {("kinds" if k == "kind" else k): v for k, v in sel.items()}
    with copyhunt.hunt(**kw) as h:
        prog.work()
    assert Counter(c.site.line for c in h.copies) == expected, "hunt"

    # copyhunt report --json with the same options: the matching copies only.
    assert main(["report", "t.json", "--json", *_flags(sel)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert Counter(c["site"]["line"] for c in doc["copies"]) == expected, "report"

    # A budget rule with the same selector, limit 0: its violation lists exactly those sites.
    assert main(["gate", "t.json", "--budget", str(_budget(tmp / "b.toml", sel)), "--format", "json"]) == 1
    (v,) = json.loads(capsys.readouterr().out)["violations"]
    assert Counter({s["line"]: s["count"] for s in v["sites"]}) == expected, "gate"

    # copyhunt diff from an empty trace: the selected sites are the added ones.
    assert main(["diff", "empty.json", "t.json", "--format", "json", *_flags(sel)]) == 0
    sites = json.loads(capsys.readouterr().out)["sites"]
    assert Counter({s["line"]: s["b"]["count"] for s in sites}) == expected, "diff"

    # The pytest plugin's fixture (the marker counts with the same code), kind None = every kind.
    assert CopyhuntFixture().count(trace, **{"kind": None, **sel}) == len(lines), "plugin"
