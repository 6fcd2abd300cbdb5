"""Copy budgets: parse ``copyhunt.toml`` / ``[tool.copyhunt]`` into frozen, validated objects.

A budget file::

    headroom = 10                  # % added to every limit: L allows floor(L * (1 + 10/100))

    [[rules]]
    name = "MoE layers make no output copies"   # optional; shown in violations
    kind = "d2d"                   # optional: one of d2d, h2d, d2h, p2p, or a list of them
    region = "moe"                 # optional glob: copies inside a region of that name, any nesting
    site = "src/model/*.py"        # optional glob on the site's file, or "file:line"
    op = "aten.copy_*"             # optional glob on the op (or its short form, copy_)
    max_copies = 0                 # at least one limit per rule
    max_bytes = "1 MiB"            # int bytes, or a string with a unit (B, KB, KiB, MB, MiB, GB, GiB)
    max_eliminable = 0             # checked only when the trace carries verdicts
    max_refuted = 0                # copies copyhunt verify refuted; checked only on a verified trace
    max_verified = 0               # eliminable copies copyhunt verify proved removable (on its input)
    headroom = 0                   # optional: overrides the file's headroom for this rule
    per = "run"                    # a run of several processes: "run" (all together) or "rank" (each process)

    [[allow]]                      # copies every rule ignores; a reason is required
    site = "*/tokenizer.py"
    kind = "h2d"
    reason = "token ids go to the GPU once per step"

In ``pyproject.toml`` the same keys live under ``[tool.copyhunt]``. Every mistake raises
:class:`copyhunt.errors.BudgetError` with one line naming the key and what would be valid.
Selectors are :class:`copyhunt.selection.Selection` objects (the same selection as ``--kind`` / ``--region``).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from copyhunt.errors import BudgetError
from copyhunt.validation import check_depth, read_text
from copyhunt.selection import Selection, SelectionError

TOP_KEYS = ("headroom", "rules", "allow")
SELECTOR_KEYS = ("kind", "region", "site", "op")
LIMIT_KEYS = ("max_copies", "max_bytes", "max_eliminable", "max_refuted", "max_verified")
RULE_KEYS = ("name", *SELECTOR_KEYS, *LIMIT_KEYS, "headroom", "per")
#: What a rule counts in a run of several processes (docs/multiprocess.md): every process's copies
#: together, or each process (each torch.distributed rank) on its own.
PER_VALUES = ("run", "rank")
ALLOW_KEYS = (*SELECTOR_KEYS, "reason")

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Limit:
    """One number not to exceed, with the headroom that loosens it."""

    value: int
    headroom: float = 0.0  # percent

    @property
    def allowed(self) -> int:
        """floor(value * (1 + headroom/100)), computed exactly (no float rounding at the boundary)."""
        # Fraction(str(...)) keeps 10.0 % exact: float 1.1 * 10 would be 11.000000000000002.
        return math.floor(Fraction(self.value) * (1 + Fraction(str(self.headroom)) / 100))


@dataclass(frozen=True)
class Rule:
    """A budget: copies matching ``selector`` must stay within the limits that are set."""

    name: str
    selector: Selection
    max_copies: Limit | None = None
    max_bytes: Limit | None = None
    max_eliminable: Limit | None = None
    max_refuted: Limit | None = None  # copies whose verification is "refuted"
    max_verified: Limit | None = None  # eliminable copies whose verification is "verified"
    per: str = "run"  # one of PER_VALUES; a single trace is its own run and its own rank


@dataclass(frozen=True)
class Allow:
    """An allowlisted group of copies: no rule counts them; the reason is shown in reports."""

    selector: Selection
    reason: str


@dataclass(frozen=True)
class Budget:
    """A whole budget file: rules, allowlist, default headroom and where it came from."""

    rules: tuple[Rule, ...] = ()
    allow: tuple[Allow, ...] = ()
    headroom: float = 0.0
    source: str = "<budget>"


# --- parsing --------------------------------------------------------------------------------


def _toml_loads(text: str, source: str) -> dict[str, Any]:
    """Parse TOML with tomllib (Python >= 3.11) or the tomli backport (3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # pragma: no cover - exercised only on Python 3.10
        try:
            import tomli as toml
        except ImportError:
            raise BudgetError(f"{source}: reading TOML on Python 3.10 needs tomli (pip install tomli)") from None
    try:
        doc = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise BudgetError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:
        raise BudgetError(f"{source}: nested too deeply; not a budget file") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise BudgetError(f"{source}: not a budget file ({str(exc).splitlines()[0][:120]})") from None
    check_depth(doc, source, "budget file", BudgetError)
    return doc


def load_budget(path: str | Path) -> Budget:
    """Read a budget from ``copyhunt.toml`` or ``pyproject.toml`` (``[tool.copyhunt]``)."""
    path = Path(path)
    if not path.exists():
        raise BudgetError(f"{path}: no such budget file")
    # A regular file of at most 1 MiB (a budget is a few lines): a FIFO or /dev/zero is refused at once.
    text = read_text(path, "budget file (copyhunt.toml or pyproject.toml)", BudgetError, limit=BUDGET_MAX_BYTES)
    doc = _toml_loads(text, str(path))
    if path.name == "pyproject.toml":
        table = doc.get("tool", {}).get("copyhunt")
        if table is None:
            raise BudgetError(f"{path}: no [tool.copyhunt] table")
        return parse_budget(table, source=f"{path}", prefix="tool.copyhunt.")
    return parse_budget(doc, source=str(path))


def parse_budget(doc: Mapping[str, Any], source: str = "<budget>", prefix: str = "") -> Budget:
    """Validate a parsed TOML table and build the Budget; BudgetError names the first bad key."""
    if not isinstance(doc, Mapping):
        raise BudgetError(f"{source}: {prefix.rstrip('.') or 'budget'} must be a table")
    _check_keys(doc, TOP_KEYS, source, prefix.rstrip(".") or "the top level")
    headroom = _headroom(doc.get("headroom", 0), source, f"{prefix}headroom")
    rules_raw = doc.get("rules", [])
    allow_raw = doc.get("allow", [])
    if not isinstance(rules_raw, list):
        raise BudgetError(f"{source}: {prefix}rules must be an array of tables ([[rules]])")
    if not isinstance(allow_raw, list):
        raise BudgetError(f"{source}: {prefix}allow must be an array of tables ([[allow]])")
    rules = tuple(_rule(r, i, headroom, source, prefix) for i, r in enumerate(rules_raw))
    allow = tuple(_allow(a, i, source, prefix) for i, a in enumerate(allow_raw))
    if not rules:
        raise BudgetError(f"{source}: no rules: add at least one [[{prefix}rules]] table with one of {', '.join(LIMIT_KEYS)}")
    return Budget(rules=rules, allow=allow, headroom=headroom, source=source)


def _check_keys(table: Mapping[str, Any], valid: tuple[str, ...], source: str, where: str) -> None:
    for key in table:
        if key not in valid:
            raise BudgetError(f"{source}: unknown key {key!r} in {where} (valid: {', '.join(valid)})")


def _headroom(raw: Any, source: str, key: str) -> float:
    if (isinstance(raw, bool) or not isinstance(raw, (int, float)) or (isinstance(raw, int) and raw > 10**9)
            or not math.isfinite(raw) or raw < 0):
        raise BudgetError(f"{source}: {key} must be a percentage >= 0 (e.g. 10 for 10%), got {_short(raw)}")
    return float(raw)


def _selector(table: Mapping[str, Any], source: str, where: str) -> Selection:
    try:
        return Selection.parse(kinds=table.get("kind"), region=table.get("region"), site=table.get("site"),
                               op=table.get("op"), prefix=f"{where}.")
    except SelectionError as exc:
        raise BudgetError(f"{source}: {exc}") from None


def _limit(raw: Any, key: str, headroom: float, source: str, where: str) -> Limit:
    if key == "max_bytes":
        return Limit(parse_size(raw, f"{source}: {where}.{key}"), headroom)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0 or raw > MAX_SIZE:
        raise BudgetError(f"{source}: {where}.{key} must be an integer >= 0, got {_short(raw)}")
    return Limit(raw, headroom)


#: The largest byte limit (2**63 - 1): anything above is a typo, not a budget.
MAX_SIZE = 2**63 - 1
BUDGET_MAX_BYTES = 1 << 20


def parse_size(raw: Any, what: str = "size") -> int:
    """Bytes from an int or a string like ``"1.5 MiB"``; BudgetError on anything else."""
    if isinstance(raw, bool):
        raise BudgetError(f"{what} must be bytes (an integer >= 0 or a string like '4 MiB'), got {raw!r}")
    if isinstance(raw, int):
        if raw < 0 or raw > MAX_SIZE:
            raise BudgetError(f"{what} must be between 0 and 2**63 - 1, got {_short(raw)}")
        return raw
    if isinstance(raw, str) and len(raw) <= 64:
        m = _SIZE.match(raw)
        unit = (m.group(2) or "b").lower() if m else ""
        if m and unit in _UNITS:
            size = math.floor(Fraction(m.group(1)) * _UNITS[unit])
            if size <= MAX_SIZE:
                return size
    raise BudgetError(
        f"{what} must be bytes (an integer >= 0 or a string like '4 MiB'; units: B, KB, MB, GB, KiB, MiB, GiB), got {_short(raw)}"
    )


def _short(raw: Any) -> str:
    text = repr(raw) if not isinstance(raw, int) or raw.bit_length() < 200 else f"an integer of {len(str(abs(raw)))} digits"
    return text if len(text) <= 80 else text[:77] + "..."



def _rule(raw: Any, i: int, headroom: float, source: str, prefix: str) -> Rule:
    where = f"{prefix}rules[{i}]"
    if not isinstance(raw, Mapping):
        raise BudgetError(f"{source}: {where} must be a table ([[rules]])")
    _check_keys(raw, RULE_KEYS, source, where)
    rule_headroom = _headroom(raw["headroom"], source, f"{where}.headroom") if "headroom" in raw else headroom
    limits = {k: _limit(raw[k], k, rule_headroom, source, where) for k in LIMIT_KEYS if k in raw}
    if not limits:
        raise BudgetError(f"{source}: {where} sets no limit (set at least one of {', '.join(LIMIT_KEYS)})")
    selector = _selector(raw, source, where)
    name = raw.get("name", selector.describe())
    if not isinstance(name, str) or not name.strip():
        raise BudgetError(f"{source}: {where}.name must be a non-empty string, got {name!r}")
    per = raw.get("per", "run")
    if per not in PER_VALUES:
        raise BudgetError(f"{source}: {where}.per must be one of {', '.join(repr(v) for v in PER_VALUES)}, got {per!r}")
    return Rule(name=name, selector=selector, per=per, **limits)


def _allow(raw: Any, i: int, source: str, prefix: str) -> Allow:
    where = f"{prefix}allow[{i}]"
    if not isinstance(raw, Mapping):
        raise BudgetError(f"{source}: {where} must be a table ([[allow]])")
    _check_keys(raw, ALLOW_KEYS, source, where)
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise BudgetError(f"{source}: {where} needs a reason (a non-empty string saying why these copies are fine)")
    selector = _selector(raw, source, where)
    if selector.everything:
        raise BudgetError(f"{source}: {where} selects every copy; give at least one of {', '.join(SELECTOR_KEYS)}")
    return Allow(selector=selector, reason=reason)
