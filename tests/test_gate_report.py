"""Gate and diff renderers: exact text at a fixed width, and GitHub escaping."""

from __future__ import annotations

import io

from rich.console import Console

from copyhunt.analysis.diff import diff_traces
from copyhunt.gate.budget import Allow, Budget, Limit, Rule
from copyhunt.selection import Selection
from copyhunt.gate.check import check
from copyhunt.records import Copy, Frame
from copyhunt.view import view
from factories import copy, trace
from copyhunt.report.diff_report import render_diff_text
from copyhunt.report.gate_report import annotation, render_gate_text

ROOT = "/repo"


def _copy(line: int, nbytes: int, kind: str = "d2d", us: float | None = None, verdict: str | None = None) -> Copy:
    return copy(0, nbytes, kind=kind, site=Frame("/repo/m.py", line, "f"), us=us, verdict=verdict)


def _console() -> Console:
    return Console(file=io.StringIO(), width=100, no_color=True, force_terminal=False, record=True)


def test_gate_text_exact():
    traced = trace(_copy(3, 2048), _copy(3, 2048), _copy(7, 100, kind="h2d"))
    budget = Budget(
        rules=(
            Rule("d2d", Selection(kinds=("d2d",)), max_copies=Limit(1), max_bytes=Limit(8192)),
            Rule("all copies", Selection(), max_eliminable=Limit(0)),
        ),
        allow=(Allow(Selection(kinds=("h2d",)), "inputs go up once"),),
    )
    console = _console()
    # m.py does not exist here, so no source lines are printed.
    render_gate_text(console, check(traced, budget, ROOT), trace="t.json", budget="copyhunt.toml")
    assert console.export_text() == (
        "copyhunt gate: FAIL - 1 violation\n"
        "  trace    t.json\n"
        "  budget   copyhunt.toml\n"
        "\n"
        "x d2d (kind=d2d): 2 copies, over the limit of 1\n"
        "    m.py:3 f  aten.copy_.default d2d  2 copies, 4.0 KiB\n"
        "\n"
        # 2 x 2048 B = 4.0 KiB of d2d; the allowlisted h2d copy counts for no rule.
        "      rule            copies  bytes              eliminable\n"
        "FAIL  d2d (kind=d2d)  2 / 1   4.0 KiB / 8.0 KiB  -         \n"
        "ok    all copies      -       4.0 KiB            n/a / 0   \n"
        "allowed: kind=h2d: 1 copy, 100 B - inputs go up once\n"
        "note: max_eliminable not checked: the trace carries no verdicts (trace it with a copyhunt that \n"
        "judges copies)\n"
    )


def test_diff_text_with_device_time_exact():
    a = view(trace(_copy(3, 2048, us=2.0), _copy(9, 64)))
    b = view(trace(_copy(3, 2048, us=2.5), _copy(3, 2048, us=2.5), _copy(5, 64)))
    console = _console()
    render_diff_text(console, diff_traces(a, b, ROOT), a="a.json", b="b.json")
    # A: 2048 + 64 = 2112 B; B: 2 * 2048 + 64 = 4160 B (+2048 B); device 2.0 -> 5.0 us.
    assert console.export_text() == (
        "copyhunt diff: a.json -> b.json\n"
        "  copies 2 -> 3 (+1), bytes 2.1 KiB -> 4.1 KiB (+2.0 KiB)\n"
        "  device time 2.0 us -> 5.0 us\n"
        "  sites: 1 added, 1 removed, 1 changed\n"
        "           site      op     kind  copies               bytes   device us\n"
        "added ^    m.py:5 f  copy_  d2d   0 -> 1         0 B -> 64 B           -\n"
        "removed    m.py:9 f  copy_  d2d   1 -> 0         64 B -> 0 B           -\n"
        "changed ^  m.py:3 f  copy_  d2d   1 -> 2  2.0 KiB -> 4.0 KiB  2.0 -> 5.0\n"
        "2 site(s) grew (^: more copies or bytes)\n"
    )


def test_github_escaping():
    # '%', CR and LF are escaped everywhere; ':' and ',' also in properties (actions/toolkit rules).
    assert annotation("error", "50% more\nnow", file="a,b:c.py", line=3, title="t: x") == (
        "::error file=a%2Cb%3Ac.py,line=3,title=t%3A x::50%25 more%0Anow"
    )
    assert annotation("notice", "plain") == "::notice::plain"
