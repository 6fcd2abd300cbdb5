"""group_copies and selections: exact totals on hand-built copies."""

from __future__ import annotations

import pytest

from copyhunt.analysis.grouping import (
    NO_MODULE,
    NO_REGION,
    NO_SITE,
    group_copies,
    strongest_verdict,
)
from copyhunt.records import Copy, Frame
from copyhunt.selection import Selection, region_matches
from factories import copy

A = Frame("model.py", 10, "forward")
B = Frame("model.py", 20, "finalize")


def cp(seq: int, nbytes: int, site: Frame | None, *, time_us: float | None = None, **kw) -> Copy:
    return copy(seq, nbytes, site=site, us=time_us, **kw)


def test_group_by_site_totals_and_order():
    copies = [
        cp(1, 100, A, verdict="needed", time_us=1.5),
        cp(2, 300, B, op="aten.clone.default", verdict="fresh-temporary", time_us=2.0),
        cp(3, 100, A, op="aten._to_copy.default", kind="h2d", verdict="noop", noop=True),
        cp(4, 50, None),
    ]
    groups = group_copies(copies, by="site")
    assert [g.key for g in groups] == ["model.py:20 finalize", "model.py:10 forward", NO_SITE]
    b, a, none = groups
    # B: one copy of 300 bytes.
    assert (b.count, b.bytes, b.ops, b.kinds, b.device_time_us) == (1, 300, ("aten.clone.default",), ("d2d",), 2.0)
    assert (b.verdict, b.eliminable_count) == ("fresh-temporary", 1)
    # A: 2 copies; the noop one moves 0 bytes, so bytes = 100 (not 200); device time only from seq 1.
    assert (a.count, a.noop_count, a.bytes, a.device_time_us) == (2, 1, 100, 1.5)
    assert a.ops == ("aten._to_copy.default", "aten.copy_.default")
    assert a.kinds == ("d2d", "h2d")
    assert a.verdict == "noop"  # noop is stronger than needed (records.VERDICTS order)
    assert a.eliminable_count == 1
    assert a.sites == (A,)
    assert [c.seq for c in a.copies] == [1, 3]
    # No timing at all -> None, not 0.0; no verdicts -> None.
    assert (none.count, none.bytes, none.device_time_us, none.verdict, none.sites) == (1, 50, None, None, ())


def test_ties_sort_by_count_then_key():
    copies = [cp(1, 10, B), cp(2, 10, A), cp(3, 5, A), cp(4, 5, A), cp(5, 15, Frame("z.py", 1, "f"))]
    # A: 3 copies, 20 bytes; B: 10 bytes; z: 15 bytes.
    assert [(g.key, g.count, g.bytes) for g in group_copies(copies)] == [
        ("model.py:10 forward", 3, 20),
        ("z.py:1 f", 1, 15),
        ("model.py:20 finalize", 1, 10),
    ]
    # Equal bytes and count: program order (first seq), whatever the order of the input list.
    same = [cp(1, 8, B), cp(2, 8, A)]
    assert [g.key for g in group_copies(same)] == [g.key for g in group_copies(list(reversed(same)))] == [
        "model.py:20 finalize",
        "model.py:10 forward",
    ]


def test_group_by_module_and_region():
    copies = [
        cp(1, 64, A, module="moe.experts", region="decode/moe"),
        cp(2, 32, B, module="moe.experts", region="decode"),
        cp(3, 16, B, module=None, region=None),
    ]
    by_module = group_copies(copies, by="module")
    assert [(g.key, g.count, g.bytes, g.sites) for g in by_module] == [
        ("moe.experts", 2, 96, (A, B)),
        (NO_MODULE, 1, 16, (B,)),
    ]
    by_region = group_copies(copies, by="region")
    assert [(g.key, g.bytes) for g in by_region] == [("decode/moe", 64), ("decode", 32), (NO_REGION, 16)]


def test_bad_group_by():
    with pytest.raises(ValueError, match="expected one of site, module, region"):
        group_copies([], by="file")


def test_strongest_verdict():
    assert strongest_verdict([None, "needed", "chained", "fresh-temporary"]) == "fresh-temporary"
    assert strongest_verdict(["needed"]) == "needed"
    assert strongest_verdict([None, None]) is None
    # An unknown (newer) verdict ranks below the known ones but is not lost.
    assert strongest_verdict(["brand-new"]) == "brand-new"
    assert strongest_verdict(["brand-new", "needed"]) == "needed"


@pytest.mark.parametrize(
    "region, wanted, expected",
    [
        ("decode/moe", "decode", True),
        ("decode/moe", "moe", True),
        ("decode/moe", "decode/moe", True),
        ("a/decode/moe/x", "decode/moe", True),
        ("decode/moe", "mo", False),
        ("decode/moe", "moe/decode", False),
        (None, "moe", False),
    ],
)
def test_region_matches(region, wanted, expected):
    assert region_matches(region, wanted) is expected


def test_select_copies():
    copies = [
        cp(1, 1, A, kind="d2d", region="decode/moe"),
        cp(2, 1, A, kind="h2d", region="decode"),
        cp(3, 1, A, kind="d2h", region=None),
    ]
    assert [c.seq for c in Selection().select(copies)] == [1, 2, 3]
    assert [c.seq for c in Selection(kinds=("d2d", "d2h")).select(copies)] == [1, 3]
    assert [c.seq for c in Selection(region="decode").select(copies)] == [1, 2]
    assert [c.seq for c in Selection(kinds=("h2d",), region="moe").select(copies)] == []
