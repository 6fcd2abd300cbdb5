"""Which copies something is about: ONE selection for hunts, tables, budgets, diffs and test markers.

A :class:`Selection` has four optional parts; a copy is selected when every part given matches it:

- ``kinds``: copy kinds (``d2d``, ``h2d``, ``d2h``, ``p2p``), parsed case-insensitively and validated
  here, once, whatever the front end (``--kind d2d,H2D``, ``kind = ["d2d"]``, ``kind="d2d"``);
- ``region``: a glob over region paths, matched at any nesting level: ``moe`` matches ``moe``,
  ``decode/moe`` and ``decode/moe/experts``; ``decode/*`` matches everything under ``decode``;
- ``site``: a glob over the site's file as the tables show it (``copyhunt.text.display_path``:
  relative to the root, else an import path), its absolute path, or ``file:line``; a file outside
  the root also matches a relative glob on its trailing components;
- ``op``: a glob over the aten op (``aten.copy_*``) or its short form as the tables show it (``copy_``).

Selections apply when reading a trace, never while capturing it: a hunt records every copy and keeps
its selection in ``meta.view``. Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Iterable, Mapping, Protocol, TypeVar

from copyhunt.errors import CopyhuntError
from copyhunt.records import COPY_KINDS, Frame
from copyhunt.text import display_path, short_op

_KINDS_HELP = ", ".join(COPY_KINDS)

#: Separator of nested region names in a region path.
REGION_SEP = "/"


class SelectionError(CopyhuntError, ValueError):
    """A selection part has a bad value: names the option or key, the value, and what is valid."""


class _Selectable(Protocol):
    kind: str
    region: str | None
    op: str
    site: Frame | None


C = TypeVar("C", bound=_Selectable)


def parse_kinds(raw: Any, what: str = "kind") -> tuple[str, ...] | None:
    """Copy kinds from ``"d2d,h2d"``, ``["d2d", "H2D"]`` or None (every kind); ``what`` names the option in errors."""
    if raw is None:
        return None
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(k, str) for k in items):
        raise SelectionError(f"{what} must be one of {_KINDS_HELP} or a list of them, got {raw!r}")
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in items if k.strip()))
    if not kinds:
        raise SelectionError(f"{what} must be one of {_KINDS_HELP} or a list of them, got {raw!r}")
    for k in kinds:
        if k not in COPY_KINDS:
            raise SelectionError(f"{what} {k!r} is not a copy kind (valid: {_KINDS_HELP})")
    return kinds


def parse_glob(raw: Any, what: str) -> str | None:
    """A non-empty glob string, or None; ``what`` names the option in errors."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise SelectionError(f"{what} must be a non-empty string (a glob), got {raw!r}")
    return raw


def parse_region(raw: Any, what: str = "region") -> str | None:
    """A region glob with empty path parts dropped (``"/moe/"`` is ``"moe"``), or None."""
    glob = parse_glob(raw, what)
    if glob is None:
        return None
    parts = [p for p in glob.split(REGION_SEP) if p]
    if not parts:
        raise SelectionError(f"{what} must be a non-empty string (a glob), got {raw!r}")
    return REGION_SEP.join(parts)


@lru_cache(maxsize=4096)
def region_matches(region: str | None, pattern: str) -> bool:
    """True when region path ``region`` lies inside a region matching ``pattern``, at any nesting level.

    ``moe`` matches ``moe``, ``decode/moe`` and ``decode/moe/experts`` but not ``decode/moemoe``;
    ``decode/moe`` matches those parts in that order; ``decode/*`` matches ``decode/moe``. A copy
    outside every region (None) matches no pattern.
    """
    if not region:
        return False
    parts = region.split(REGION_SEP)
    n = len(parts)
    return any(fnmatchcase(REGION_SEP.join(parts[i:j]), pattern) for i in range(n) for j in range(i + 1, n + 1))


def site_matches(site: Frame | None, pattern: str, root: str | os.PathLike[str] | None = None) -> bool:
    """True when the site's file (as shown, or absolute) or ``file:line`` matches the glob.

    A file shown with its absolute path (outside ``root`` and every import root) also matches a
    relative pattern on its trailing components (``pkg/*.py`` matches ``/elsewhere/pkg/model.py``),
    so a budget written for a repository still applies when the gate runs from elsewhere.
    """
    if site is None:
        return False
    shown = display_path(site.file, root)
    candidates: tuple[str, ...] = (shown, site.file, f"{shown}:{site.line}", f"{site.file}:{site.line}")
    if not shown.startswith(("/", "<")):
        # A path recorded relative to the project root: ``*/model.py`` still matches ``model.py``.
        candidates += (f"./{shown}", f"./{shown}:{site.line}")
    if any(fnmatchcase(c, pattern) for c in candidates):
        return True
    if shown.startswith("/") and not pattern.startswith(("/", "*")):
        return fnmatchcase(shown, f"*/{pattern}") or fnmatchcase(f"{shown}:{site.line}", f"*/{pattern}")
    return False


def op_matches(op: str, pattern: str) -> bool:
    """True when the aten op (``aten.copy_.default``) or its short form (``copy_``) matches the glob."""
    return fnmatchcase(op, pattern) or fnmatchcase(short_op(op), pattern)


@dataclass(frozen=True)
class Selection:
    """Which copies: every part given must match (None: any). See the module docstring."""

    kinds: tuple[str, ...] | None = None
    region: str | None = None
    site: str | None = None
    op: str | None = None

    @classmethod
    def parse(cls, *, kinds: Any = None, region: Any = None, site: Any = None, op: Any = None, prefix: str = "",
              names: Mapping[str, str] | None = None) -> "Selection":
        """Validate raw values (``SelectionError`` names the bad one as ``prefix + name``).

        ``names`` renames the parts in messages (``{"kinds": "--kind"}``); by default they are
        ``kind``, ``region``, ``site`` and ``op``.
        """
        label = {"kinds": "kind", "region": "region", "site": "site", "op": "op", **(names or {})}
        return cls(
            kinds=parse_kinds(kinds, prefix + label["kinds"]),
            region=parse_region(region, prefix + label["region"]),
            site=parse_glob(site, prefix + label["site"]),
            op=parse_glob(op, prefix + label["op"]),
        )

    @property
    def everything(self) -> bool:
        """True when no part is set: every copy is selected."""
        return self == ALL

    def matches(self, copy: _Selectable, root: str | os.PathLike[str] | None = None) -> bool:
        """True when ``copy`` (a record or a read-side copy) is one this selection is about."""
        if self.kinds is not None and copy.kind not in self.kinds:
            return False
        if self.region is not None and not region_matches(copy.region, self.region):
            return False
        if self.op is not None and not op_matches(copy.op, self.op):
            return False
        if self.site is not None and not site_matches(copy.site, self.site, root):
            return False
        return True

    def select(self, copies: Iterable[C], root: str | os.PathLike[str] | None = None) -> tuple[C, ...]:
        """The selected copies, in their order."""
        if self.everything:
            return tuple(copies)
        return tuple(c for c in copies if self.matches(c, root))

    def describe(self, sep: str = " ") -> str:
        """``kind=d2d region=moe``; ``all copies`` when nothing is selected."""
        parts = []
        if self.kinds is not None:
            parts.append("kind=" + ",".join(self.kinds))
        for name in ("region", "site", "op"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return sep.join(parts) or "all copies"

    def words(self, count: int | None = None) -> str:
        """``d2d copies in region moe at pkg/*.py with op copy_``: the words a test failure uses;
        with ``count``, counted and in the right number (``1 d2d copy``, ``3 d2d copies``)."""
        noun = "copy" if count == 1 else "copies"
        what = noun if self.kinds is None else f"{'/'.join(self.kinds)} {noun}"
        if count is not None:
            what = f"{count} {what}"
        if self.region is not None:
            what += f" in region {self.region}"
        if self.site is not None:
            what += f" at {self.site}"
        if self.op is not None:
            what += f" with op {self.op}"
        return what

    def to_json(self) -> dict[str, Any]:
        """The parts that are set, JSON-ready (``{"kinds": ["d2d"], "region": "moe"}``)."""
        out: dict[str, Any] = {}
        if self.kinds is not None:
            out["kinds"] = list(self.kinds)
        for name in ("region", "site", "op"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None, what: str = "meta.view.") -> "Selection":
        """The inverse of ``to_json`` (validated: a trace file is input too)."""
        raw = raw or {}
        return cls.parse(kinds=raw.get("kinds"), region=raw.get("region"), site=raw.get("site"), op=raw.get("op"),
                         prefix=what, names={"kinds": "kinds"})


#: The selection of every copy.
ALL = Selection()

