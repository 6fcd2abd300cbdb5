"""copyhunt.selection: one parse of kinds and globs, one meaning of region / site / op for every front end."""

from __future__ import annotations

import pytest

from copyhunt.errors import CopyhuntError
from copyhunt.records import CopyRecord, Frame
from copyhunt.selection import ALL, Selection, SelectionError, op_matches, parse_kinds, parse_region, region_matches
from factories import record

ROOT = "/repo"


def _copy(kind: str = "d2d", region: str | None = None, op: str = "aten.copy_.default", file: str = "/repo/pkg/m.py",
          line: int = 3) -> CopyRecord:
    return record(kind=kind, region=region, op=op, site=Frame(file, line, "f"))


@pytest.mark.parametrize(("raw", "kinds"), [
    (None, None),
    ("d2d", ("d2d",)),
    ("D2D, h2d", ("d2d", "h2d")),  # case-insensitive, blanks around commas ignored
    ("d2d,d2d", ("d2d",)),  # duplicates once
    (["H2D", "d2h"], ("h2d", "d2h")),
    (("p2p",), ("p2p",)),
])
def test_kinds_parse_case_insensitively(raw, kinds):
    assert parse_kinds(raw) == kinds


@pytest.mark.parametrize(("raw", "message"), [
    ("x2y", "--kind 'x2y' is not a copy kind (valid: d2d, h2d, d2h, p2p)"),
    ("d2d,gpu", "--kind 'gpu' is not a copy kind (valid: d2d, h2d, d2h, p2p)"),
    ("", "--kind must be one of d2d, h2d, d2h, p2p or a list of them, got ''"),
    ([], "--kind must be one of d2d, h2d, d2h, p2p or a list of them, got []"),
    (3, "--kind must be one of d2d, h2d, d2h, p2p or a list of them, got 3"),
])
def test_bad_kinds_fail_in_one_line(raw, message):
    with pytest.raises(SelectionError) as info:
        parse_kinds(raw, "--kind")
    assert str(info.value) == message
    assert isinstance(info.value, CopyhuntError)


def test_region_globs_match_at_any_nesting_level():
    for region, pattern, expected in [
        ("moe", "moe", True),
        ("decode/moe", "moe", True),
        ("decode/moe/experts", "moe", True),
        ("decode/moe", "decode/moe", True),
        ("a/decode/moe/x", "decode/moe", True),
        ("decode/moe", "decode/*", True),
        ("decode/moe", "mo?", True),
        ("decode/moemoe", "moe", False),
        ("decode/moe", "mo", False),
        ("decode/moe", "moe/decode", False),
        (None, "moe", False),
    ]:
        assert region_matches(region, pattern) is expected, (region, pattern)
    assert parse_region("/moe/") == "moe"  # empty path parts are dropped
    with pytest.raises(SelectionError, match="region must be a non-empty string"):
        parse_region("/")


def test_op_globs_match_the_aten_name_or_the_short_form():
    assert op_matches("aten.copy_.default", "aten.copy_*")
    assert op_matches("aten.copy_.default", "copy_")  # as the tables show it
    assert op_matches("aten::copy_", "copy_")  # imported profiler names
    assert not op_matches("aten._to_copy.default", "copy_")


def test_a_selection_combines_its_parts():
    c = _copy("h2d", "decode/moe", "aten._to_copy.default")
    assert ALL.matches(c) and ALL.everything
    assert Selection(kinds=("h2d",), region="moe", site="pkg/*", op="_to_copy").matches(c, ROOT)
    assert not Selection(kinds=("d2d",)).matches(c, ROOT)
    assert not Selection(site="pkg/m.py:4").matches(c, ROOT)
    assert Selection(site="pkg/m.py:3").matches(c, ROOT)


def test_describe_words_and_json():
    sel = Selection.parse(kinds="D2D,h2d", region="decode/*", site="pkg/*.py", op="copy_")
    assert sel.describe() == "kind=d2d,h2d region=decode/* site=pkg/*.py op=copy_"
    assert sel.describe(", ") == "kind=d2d,h2d, region=decode/*, site=pkg/*.py, op=copy_"
    assert sel.words() == "d2d/h2d copies in region decode/* at pkg/*.py with op copy_"
    assert sel.words(1) == "1 d2d/h2d copy in region decode/* at pkg/*.py with op copy_"
    assert sel.words(0) == "0 d2d/h2d copies in region decode/* at pkg/*.py with op copy_"
    assert Selection().words(3) == "3 copies"
    assert sel.to_json() == {"kinds": ["d2d", "h2d"], "region": "decode/*", "site": "pkg/*.py", "op": "copy_"}
    assert Selection.from_json(sel.to_json()) == sel
    assert ALL.describe() == "all copies" and ALL.to_json() == {} and Selection.from_json(None) == ALL
    with pytest.raises(SelectionError, match="meta.view.kinds 'gpu' is not a copy kind"):
        Selection.from_json({"kinds": ["gpu"]})
