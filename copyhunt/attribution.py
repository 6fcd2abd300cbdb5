"""Attribution: raw Python stacks -> the user's source site. Pure functions, no torch state touched.

Default rule: the site is the innermost frame outside torch, copyhunt and the standard library
(the bundled MoE demo, ``copyhunt_moe``, is a package apart: user code like any other).
``hide`` globs remove more files from consideration (e.g. a helper module, so its caller is blamed);
``focus`` globs name the files the user cares about: the innermost frame matching one of them is the
site, and when no frame matches, the default rule applies. Globs use ``fnmatch`` on the absolute file
path, so ``*/mypkg/*`` or ``*/model.py`` are the usual forms.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Callable

from copyhunt.errors import CopyhuntError
from copyhunt.records import Frame

#: Ranks returned by :meth:`SiteRule.rank`.
SKIP, CANDIDATE, FOCUSED = 0, 1, 2


def _dir_prefix(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")


@lru_cache(maxsize=1)
def library_prefixes() -> tuple[str, ...]:
    """Path prefixes of code that is never the user's site: torch, copyhunt, the standard library."""
    import torch  # local: attribution itself needs no torch, only its install path

    import copyhunt

    paths = {os.path.dirname(torch.__file__), os.path.dirname(copyhunt.__file__)}
    for key in ("stdlib", "platstdlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    # Both the real and the given spelling: code objects carry whichever path was imported.
    out: set[str] = set()
    for p in paths:
        out.add(os.path.join(os.path.abspath(p), ""))
        out.add(_dir_prefix(p))
    # site-packages lives under the stdlib folder in some layouts (e.g. lib/python3.11/site-packages):
    # those are third-party libraries, which ARE user-visible sites, so they are exempted below.
    return tuple(sorted(out))


@lru_cache(maxsize=1)
def _site_packages() -> tuple[str, ...]:
    out: set[str] = set()
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            out.add(os.path.join(os.path.abspath(p), ""))
            out.add(_dir_prefix(p))
    for p in sys.path:
        if p.endswith(("site-packages", "dist-packages")):
            out.add(os.path.join(os.path.abspath(p), ""))
    return tuple(sorted(out))


def is_library_file(filename: str) -> bool:
    """True for torch, copyhunt and standard-library files (and Python internals like ``<frozen ...>``)."""
    if filename.startswith("<frozen") or filename.startswith("<built-in"):
        return True
    path = filename if os.path.isabs(filename) else os.path.abspath(filename)
    torch_or_us = False
    for prefix in library_prefixes():
        if path.startswith(prefix):
            torch_or_us = True
            break
    if not torch_or_us:
        return False
    # Third-party packages under site-packages are user-visible (vLLM, AITER...), except torch and us.
    for sp in _site_packages():
        if path.startswith(sp):
            return _in_torch_or_copyhunt(path)
    return True


@lru_cache(maxsize=1)
def _torch_and_copyhunt_prefixes() -> tuple[str, ...]:
    import torch

    import copyhunt

    out: set[str] = set()
    for p in (os.path.dirname(torch.__file__), os.path.dirname(copyhunt.__file__)):
        out.add(os.path.join(os.path.abspath(p), ""))
        out.add(_dir_prefix(p))
    return tuple(sorted(out))


def _in_torch_or_copyhunt(path: str) -> bool:
    return any(path.startswith(p) for p in _torch_and_copyhunt_prefixes())


class BadGlobError(CopyhuntError, ValueError):
    """A --focus / --hide value is not a non-empty glob string."""


def _validate_globs(globs: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(globs, str):
        # A bare string would be iterated letter by letter: almost certainly a missing tuple.
        globs = (globs,)
    out = tuple(globs)
    for g in out:
        if not isinstance(g, str) or not g:
            raise BadGlobError(f"--{what} takes non-empty glob strings, got {g!r}")
    return out


class SiteRule:
    """Which frames may be a site, given ``focus`` / ``hide`` globs; ranks are cached per file name."""

    def __init__(self, focus: Iterable[str] = (), hide: Iterable[str] = ()) -> None:
        self.focus = _validate_globs(focus, "focus")
        self.hide = _validate_globs(hide, "hide")
        self._cache: dict[str, int] = {}

    @property
    def wanted(self) -> int:
        """The rank that ends a search at once: FOCUSED with focus globs, else CANDIDATE."""
        return FOCUSED if self.focus else CANDIDATE

    def rank(self, filename: str) -> int:
        """FOCUSED (matches a focus glob), CANDIDATE (a default site) or SKIP; cached per file."""
        r = self._cache.get(filename)
        if r is None:
            r = self._rank(filename)
            self._cache[filename] = r
        return r

    def _rank(self, filename: str) -> int:
        path = filename if filename.startswith("<") else os.path.abspath(filename)
        if any(fnmatch.fnmatch(path, g) for g in self.hide):
            return SKIP
        if any(fnmatch.fnmatch(path, g) for g in self.focus):
            return FOCUSED
        return SKIP if is_library_file(filename) else CANDIDATE

    def choose_index(self, files: Sequence[str]) -> int | None:
        """Index of the site in a stack of file names (innermost first), or None when none qualifies."""
        fallback: int | None = None
        wanted = self.wanted
        for i, f in enumerate(files):
            r = self.rank(f)
            if r >= wanted:
                return i
            if r == CANDIDATE and fallback is None:
                fallback = i
        return fallback


def choose_site(stack: Sequence[Frame], focus: Iterable[str] = (), hide: Iterable[str] = ()) -> Frame | None:
    """The user's site in ``stack`` (innermost first) under the focus/hide globs, or None."""
    i = SiteRule(focus, hide).choose_index([f.file for f in stack])
    return None if i is None else stack[i]


def attribute(stack: Sequence[Frame], rule: SiteRule, depth: int) -> tuple[Frame | None, tuple[Frame, ...]]:
    """(site, short stack): the short stack starts at the site and holds ``depth`` frames toward the caller.

    Without any qualifying frame the short stack is the innermost ``depth`` frames and the site is None.
    """
    i = rule.choose_index([f.file for f in stack])
    if i is None:
        return None, tuple(stack[:depth])
    return stack[i], tuple(stack[i : i + depth])


def make_attributor(
    focus: Iterable[str] = (), hide: Iterable[str] = (), depth: int = 8
) -> tuple[SiteRule, Callable[[Sequence[Frame]], tuple[Frame | None, tuple[Frame, ...]]]]:
    """A rule (for per-op site search in the capture) and the matching (site, short stack) function."""
    rule = SiteRule(focus, hide)

    def _attribute(stack: Sequence[Frame]) -> tuple[Frame | None, tuple[Frame, ...]]:
        return attribute(stack, rule, depth)

    return rule, _attribute
