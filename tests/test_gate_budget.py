"""Budget files: parsed into frozen objects; every malformed budget fails with one line naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from copyhunt.errors import EXIT_BAD_INPUT, BudgetError
from copyhunt.gate.budget import Allow, Budget, Limit, Rule, load_budget, parse_budget, parse_size
from copyhunt.selection import Selection
from copyhunt.gate.check import find_budget

GOOD = """
headroom = 10

[[rules]]
name = "moe output copies"
kind = "d2d"
region = "moe"
max_copies = 0

[[rules]]
kind = ["h2d", "d2h"]
site = "src/*.py"
max_bytes = "1.5 KiB"
max_eliminable = 3
max_refuted = 0
headroom = 0

[[allow]]
site = "*/tokenizer.py"
kind = "h2d"
reason = "token ids go to the GPU once per step"
"""


def _write(tmp_path: Path, text: str, name: str = "copyhunt.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_budget_parses_into_objects(tmp_path):
    budget = load_budget(_write(tmp_path, GOOD))
    assert budget == Budget(
        rules=(
            Rule("moe output copies", Selection(kinds=("d2d",), region="moe"), max_copies=Limit(0, 10.0)),
            Rule(
                "kind=h2d,d2h site=src/*.py",  # default name: the selector
                Selection(kinds=("h2d", "d2h"), site="src/*.py"),
                max_bytes=Limit(1536, 0.0),  # 1.5 * 1024
                max_eliminable=Limit(3, 0.0),
                max_refuted=Limit(0, 0.0),
            ),
        ),
        allow=(Allow(Selection(kinds=("h2d",), site="*/tokenizer.py"), "token ids go to the GPU once per step"),),
        headroom=10.0,
        source=str(tmp_path / "copyhunt.toml"),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.rules[0].name = "x"  # type: ignore[misc]


def test_pyproject_tool_table(tmp_path):
    text = "[project]\nname = 'x'\n\n[tool.copyhunt]\nheadroom = 5\n\n[[tool.copyhunt.rules]]\nmax_copies = 4\n"
    path = _write(tmp_path, text, "pyproject.toml")
    budget = load_budget(path)
    assert budget.rules == (Rule("all copies", Selection(), max_copies=Limit(4, 5.0)),)
    assert find_budget(tmp_path) == path


def test_find_budget_prefers_copyhunt_toml(tmp_path):
    _write(tmp_path, "[project]\nname = 'x'\n", "pyproject.toml")
    assert find_budget(tmp_path) is None  # a pyproject without [tool.copyhunt] is no budget
    path = _write(tmp_path, "[[rules]]\nmax_copies = 1\n")
    assert find_budget(tmp_path) == path


@pytest.mark.parametrize(
    ("value", "headroom", "allowed"),
    [
        (10, 0, 10),
        (10, 10, 11),  # floor(10 * 1.1) = 11 exactly (float arithmetic would give 11.000000000000002)
        (10, 15, 11),  # floor(11.5) = 11
        (100, 7, 107),  # float 100 * 1.07 = 107.00000000000001; exact arithmetic says 107
        (3, 33.4, 4),  # floor(4.002) = 4
        (3, 33.3, 3),  # floor(3.999) = 3
        (0, 50, 0),  # headroom never loosens a zero limit
    ],
)
def test_headroom_floor(value, headroom, allowed):
    assert Limit(value, headroom).allowed == allowed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(0, 0), (4096, 4096), ("4096", 4096), ("2 KiB", 2048), ("1.5MiB", 1572864), ("3 MB", 3_000_000), ("1 gib", 2**30), ("7B", 7)],
)
def test_sizes(raw, expected):
    assert parse_size(raw) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("headroom = 5\n[[rules]]\nmax_copy = 1\n", "unknown key 'max_copy' in rules[0] (valid: name, kind, region, site, op, max_copies, max_bytes, max_eliminable, max_refuted, max_verified, headroom, per)"),
        ("budgets = 1\n", "unknown key 'budgets' in the top level (valid: headroom, rules, allow)"),
        ("[[rules]]\nkind = 'gpu'\nmax_copies = 1\n", "rules[0].kind 'gpu' is not a copy kind (valid: d2d, h2d, d2h, p2p)"),
        ("[[rules]]\nkind = []\nmax_copies = 1\n", "rules[0].kind must be one of d2d, h2d, d2h, p2p or a list of them, got []"),
        ("[[rules]]\nmax_copies = -1\n", "rules[0].max_copies must be an integer >= 0, got -1"),
        ("[[rules]]\nmax_copies = 1.5\n", "rules[0].max_copies must be an integer >= 0, got 1.5"),
        ("[[rules]]\nmax_copies = true\n", "rules[0].max_copies must be an integer >= 0, got True"),
        ("[[rules]]\nmax_bytes = '3 parsecs'\n", "rules[0].max_bytes must be bytes"),
        ("[[rules]]\nregion = 'moe'\n", "rules[0] sets no limit (set at least one of max_copies, max_bytes, max_eliminable, max_refuted, max_verified)"),
        ("[[rules]]\nmax_copies = 1\nper = \"ranks\"\n", "rules[0].per must be one of 'run', 'rank', got 'ranks'"),
        ("[[rules]]\nregion = ''\nmax_copies = 1\n", "rules[0].region must be a non-empty string (a glob), got ''"),
        ("headroom = -5\n[[rules]]\nmax_copies = 1\n", "headroom must be a percentage >= 0 (e.g. 10 for 10%), got -5"),
        ("headroom = '10%'\n[[rules]]\nmax_copies = 1\n", "headroom must be a percentage >= 0 (e.g. 10 for 10%), got '10%'"),
        ("headroom = 5\n", "no rules: add at least one [[rules]] table"),
        ("rules = 3\n", "rules must be an array of tables ([[rules]])"),
        ("[[rules]]\nmax_copies = 1\n[[allow]]\nsite = 'a.py'\n", "allow[0] needs a reason"),
        ("[[rules]]\nmax_copies = 1\n[[allow]]\nreason = 'all fine'\n", "allow[0] selects every copy; give at least one of kind, region, site, op"),
        ("[[rules]]\nmax_copies = 1\n[[allow]]\nsite = 'a.py'\nreason = 'x'\nwhy = 'y'\n", "unknown key 'why' in allow[0] (valid: kind, region, site, op, reason)"),
        ("[[rules]\nmax_copies = 1\n", "not valid TOML"),
    ],
)
def test_malformed_budgets_fail_with_one_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(BudgetError) as info:
        load_budget(path)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert message in line
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_pyproject_errors_name_the_full_key(tmp_path):
    path = _write(tmp_path, "[[tool.copyhunt.rules]]\nmax_copies = 'many'\n", "pyproject.toml")
    with pytest.raises(BudgetError, match=r"tool\.copyhunt\.rules\[0\]\.max_copies must be an integer >= 0, got 'many'"):
        load_budget(path)
    sub = tmp_path / "sub"
    sub.mkdir()
    no_table = _write(sub, "[project]\nname='x'\n", "pyproject.toml")
    with pytest.raises(BudgetError, match=r"no \[tool\.copyhunt\] table"):
        load_budget(no_table)


def test_missing_and_directory_budget(tmp_path):
    with pytest.raises(BudgetError, match="no such budget file"):
        load_budget(tmp_path / "nope.toml")
    with pytest.raises(BudgetError, match="is a directory"):
        load_budget(tmp_path)


def test_parse_budget_rejects_non_table():
    with pytest.raises(BudgetError, match="budget must be a table"):
        parse_budget([1, 2])  # type: ignore[arg-type]
