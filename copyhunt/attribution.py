"""Attribution: raw Python stacks -> the user's source site. Pure functions, no torch state touched.

ONE chooser (``copyhunt.capture.sites.choose``): the site is the innermost frame of the wanted rank,
else the innermost candidate. What ranks a frame depends on where the stack came from, so there is
a rule object per source:

- :class:`SiteRule`: live frames (the dispatch capture), absolute file paths. A candidate is any
  frame outside torch, copyhunt and the standard library; third-party packages in site-packages
  (vLLM, AITER...) and the bundled MoE demo (``copyhunt_moe``, a package apart) are user code.
- :class:`KinetoSiteRule`: the ``python_function`` stacks of a torch.profiler (Kineto) trace, whose
  paths are relative to sys.path (``torch/nn/modules/module.py``, ``inspect.py``).

Both take ``hide`` globs (files never blamed, so a helper's caller is) and ``focus`` globs (the
innermost matching frame is the site; when none matches, the default rule applies). Globs use
``fnmatch`` on the file path (absolute for live frames), so ``*/mypkg/*`` or ``*/model.py`` are
the usual forms. The dispatch capture walks live frames with the same rule and the same chooser
(``SiteChooser.live`` in ``capture/sites.py``).
"""

from __future__ import annotations

import fnmatch
import os
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Callable

from dataclasses import replace

from copyhunt.capture.sites import CANDIDATE, FOCUSED, SKIP, choose_index
from copyhunt.errors import CopyhuntError
from copyhunt.records import CopyRecord, Frame, Trace
from copyhunt.text import display_path

#: Top-level names of the standard library (a Kineto frame ``inspect.py`` or ``json/decoder.py``).
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


def _both_spellings(paths: Iterable[str]) -> tuple[str, ...]:
    # Code objects carry whichever spelling the file was imported by: the given one or the real one.
    out: set[str] = set()
    for p in paths:
        out.add(os.path.join(os.path.abspath(p), ""))
        out.add(os.path.join(os.path.realpath(p), ""))
    return tuple(sorted(out))


@lru_cache(maxsize=1)
def _roots() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(torch and copyhunt folders, standard-library folders, site-packages folders) as path prefixes."""
    import torch  # local: attribution itself needs no torch, only its install path

    import copyhunt

    ours = _both_spellings([os.path.dirname(torch.__file__), os.path.dirname(copyhunt.__file__)])
    paths = sysconfig.get_paths()
    stdlib = _both_spellings(p for p in (paths.get("stdlib"), paths.get("platstdlib")) if p)
    site = [p for p in (paths.get("purelib"), paths.get("platlib")) if p]
    site += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return ours, stdlib, _both_spellings(site)


def is_library_file(filename: str) -> bool:
    """True for torch, copyhunt and standard-library files (and Python internals like ``<frozen ...>``)."""
    if filename.startswith("<frozen") or filename.startswith("<built-in"):
        return True
    path = filename if os.path.isabs(filename) else os.path.abspath(filename)
    ours, stdlib, site = _roots()
    if path.startswith(ours):
        return True
    # site-packages may live under the standard library's folder (lib/python3.11/site-packages):
    # the third-party code there is user code.
    return path.startswith(stdlib) and not path.startswith(site)


def is_kineto_library_frame(file: str) -> bool:
    """The same rule for a Kineto stack's paths (relative to sys.path): torch, copyhunt, the standard library."""
    if file.startswith("<") or file.startswith("torch/") or "/torch/" in file or "site-packages/torch" in file:
        return True
    if file.startswith("copyhunt/") or "/copyhunt/" in file:
        return True
    head = file.split("/", 1)[0]
    return (head[:-3] if head.endswith(".py") else head) in _STDLIB


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
    """Which live frames may be a site, given ``focus`` / ``hide`` globs; ranks are cached per file name."""

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
            r = self._cache[filename] = self._rank(filename)
        return r

    def _rank(self, filename: str) -> int:
        path = self._glob_path(filename)
        if any(fnmatch.fnmatch(path, g) for g in self.hide):
            return SKIP
        if any(fnmatch.fnmatch(path, g) for g in self.focus):
            return FOCUSED
        return SKIP if self._library(filename) else CANDIDATE

    def _glob_path(self, filename: str) -> str:
        return filename if filename.startswith("<") else os.path.abspath(filename)

    def _library(self, filename: str) -> bool:
        if not filename.startswith("<") and not os.path.isabs(filename):
            # A path as a trace records it (``rebase_paths``): torch, copyhunt, the standard library by import path.
            return is_kineto_library_frame(filename)
        return is_library_file(filename)

    def choose_index(self, files: Sequence[str]) -> int | None:
        """Index of the site in a stack of file names (innermost first), or None when none qualifies."""
        return choose_index(self, files)


class KinetoSiteRule(SiteRule):
    """Which frames of a torch.profiler (Kineto) stack may be a site: paths as Kineto wrote them."""

    def _glob_path(self, filename: str) -> str:
        return filename  # relative to sys.path on the machine that profiled: nothing to resolve here

    def _library(self, filename: str) -> bool:
        return is_kineto_library_frame(filename)


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


def rebase_paths(trace: Trace, root: str | os.PathLike[str]) -> Trace:
    """``trace`` with every frame's file as ``copyhunt.text.display_path`` shows it from ``root``.

    Files below the project root become relative to it, installed packages and the standard library
    their import paths (``transformers/models/...``, ``torch/...``), so the same program traced from
    two checkouts or directories records the same sites (``diff`` and ``gate --baseline`` compare
    them). ``meta.root`` keeps the root. Applied by the runner before the trace is saved.
    """
    base = os.path.abspath(os.fspath(root))
    fr = frame_relocator(base)

    def copy(c: Any) -> Any:
        site = None if c.site is None else fr(c.site)
        stack = tuple(fr(f) for f in c.stack)
        if site is c.site and all(a is b for a, b in zip(stack, c.stack)):
            return c
        return replace(c, site=site, stack=stack)

    # Records whose frames are already relative (the hunt relocated them while building) stay as they are.
    copies = tuple(copy(c) for c in trace.copies)
    ops = tuple(o if o.site is None or fr(o.site) is o.site else replace(o, site=fr(o.site)) for o in trace.ops)
    return replace(trace, meta=replace(trace.meta, root=base), copies=copies, ops=ops)


def frame_relocator(root: str | os.PathLike[str]) -> Callable[[Frame], Frame]:
    """A cached map from a frame to the same frame with its file as seen from ``root`` (``rebase_paths``);
    a frame whose file does not change comes back as the same object."""
    base = os.path.abspath(os.fspath(root))
    # By identity: Frame equality ignores source_text, so an equal frame must not stand in for another.
    frames: dict[int, tuple[Frame, Frame]] = {}
    paths: dict[str, str] = {}

    def relocate(f: Frame) -> Frame:
        known = frames.get(id(f))
        if known is not None and known[0] is f:
            return known[1]
        path = paths.get(f.file)
        if path is None:
            path = paths[f.file] = display_path(f.file, base)
        out = f if path == f.file else replace(f, file=path)  # source_text kept
        frames[id(f)] = (f, out)
        frames[id(out)] = (out, out)
        return out

    return relocate


def reattribute(copies: Sequence[CopyRecord], focus: Iterable[str] = (), hide: Iterable[str] = ()) -> tuple[CopyRecord, ...]:
    """Copies attributed again at read time, from the short stacks the trace stored (``report --focus/--hide``).

    A stored stack starts at the site the capture chose and runs toward the callers, so the site can
    move outward (``--hide`` the site's file, ``--focus`` a caller) but not inward: the frames below
    the recorded site were not kept. A copy whose stack has no qualifying frame keeps its site.
    """
    from dataclasses import replace

    rule = SiteRule(focus, hide)
    out = []
    for c in copies:
        stack = c.stack or ((c.site,) if c.site is not None else ())
        i = rule.choose_index([f.file for f in stack]) if stack else None
        if i is None or (c.site is not None and i == 0 and stack[0] == c.site):
            out.append(c)
            continue
        out.append(replace(c, site=stack[i], stack=tuple(stack[i:])))
    return tuple(out)
