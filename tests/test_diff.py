"""diff_traces(): sites added, removed and changed, with stable keys; exact numbers on hand-built traces."""

from __future__ import annotations

from copyhunt.analysis.diff import SiteKey, SiteStats, diff_traces, site_key
from copyhunt.text import display_path
from copyhunt.records import Copy, Frame
from copyhunt.view import view
from factories import copy, record, trace

ROOT = "/repo"


def _copy(line: int, nbytes: int = 100, file: str = "/repo/pkg/model.py", **kw) -> Copy:
    return copy(0, nbytes, site=Frame(file, line, "forward"), **kw)


def test_display_path():
    assert display_path("/repo/pkg/a.py", ROOT) == "pkg/a.py"
    assert display_path("/venv/lib/python3.11/site-packages/torch/nn/f.py", ROOT) == "torch/nn/f.py"
    assert display_path("/elsewhere/a.py", ROOT) == "/elsewhere/a.py"
    assert display_path("rel/a.py", ROOT) == "rel/a.py"
    assert display_path("<string>", ROOT) == "<string>"


def test_site_key_is_stable_across_checkouts():
    a = _copy(5, file="/ci/checkout/pkg/model.py")
    b = _copy(5, file="/home/me/src/pkg/model.py")
    assert site_key(a, "/ci/checkout") == site_key(b, "/home/me/src") == SiteKey("pkg/model.py", 5, "forward", "aten.copy_.default", "d2d")
    no_site = record(0, 4, op="aten.clone.default")
    assert site_key(no_site, ROOT) == SiteKey("<unknown>", 0, "", "aten.clone.default", "d2d")


def test_added_removed_changed_same():
    a = view(trace(_copy(10), _copy(10), _copy(20, 400, us=2.0), _copy(30), _copy(40, verdict="noop")))
    b = view(trace(_copy(10), _copy(20, 400, us=3.5), _copy(31), _copy(40, verdict="noop"), _copy(50, kind="h2d", op="aten._to_copy.default")))
    d = diff_traces(a, b, ROOT)
    rows = [(c.status, c.key.line, c.key.kind, c.before.count, c.after.count, c.before.bytes, c.after.bytes, c.grew) for c in d.changes]
    assert rows == [
        # the line move 30 -> 31 is "removed + added"; added/removed ordered by bytes change, then key
        ("added", 31, "d2d", 0, 1, 0, 100, True),
        ("added", 50, "h2d", 0, 1, 0, 100, True),
        ("removed", 30, "d2d", 1, 0, 100, 0, False),
        ("changed", 10, "d2d", 2, 1, 200, 100, False),  # fewer copies: changed, not grown
        ("changed", 20, "d2d", 1, 1, 400, 400, False),  # device time 2.0 -> 3.5 us only
        ("same", 40, "d2d", 1, 1, 100, 100, False),
    ]
    assert d.by_status("changed")[1].device_delta_us == 1.5
    assert d.by_status("changed")[0].device_delta_us is None
    # Totals: A = 5 copies, 100*4 + 400 = 800 bytes, 2.0 us, 1 eliminable; B = 5 copies, 800 bytes, 3.5 us, 1 eliminable.
    assert d.before == SiteStats(5, 800, 2.0, 1)
    assert d.after == SiteStats(5, 800, 3.5, 1)
    assert [c.key.line for c in d.grown] == [31, 50]


def test_identical_traces_show_no_change():
    a = view(trace(_copy(1), _copy(2)))
    d = diff_traces(a, a, ROOT)
    assert d.grown == ()
    assert [c.status for c in d.changes] == ["same", "same"]


def test_unknown_site_reads_plainly():
    # Imported GPU traces may carry copies no Python frame explains.
    assert SiteKey("<unknown>", 0, "", "aten::copy_", "h2d").short() == "(no source site)"
    assert SiteKey("pkg/a.py", 3, "f", "aten.copy_.default", "d2d").short() == "pkg/a.py:3 f"
