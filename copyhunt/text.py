"""Text helpers shared by every layer that words things: sizes, shares, op names, paths and sites.

Standard library only. Each helper has one spelling of one thing; where two forms exist they have two
names (``short_op`` for tables, ``op_label`` for the reasons' prose).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from copyhunt.records import Frame

_UNITS = ("KiB", "MiB", "GiB", "TiB")

# --- text from traces, budgets and the traced program: shown as data ------------------------------

#: Control characters (C0, DEL, C1) and the invisible or bidirectional marks that make text read
#: differently from what it is ("Trojan source"): never sent to a terminal or page as themselves.
INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_INVISIBLE_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _escape_char(m: "re.Match[str]") -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control / invisible character shown as ``\\xNN`` or ``\\uNNNN`` (an ESC byte
    becomes the four characters ``\\x1b``): the ONE escaping of untrusted text for terminals and pages.

    Rich markup and emoji codes are not touched here: copyhunt's consoles never interpret them
    (``copyhunt.cli.console``), so ``[bold]`` and ``x[a:b:2]`` print as written."""
    pattern = _INVISIBLE_BUT_NEWLINE if keep_newlines else INVISIBLE
    return pattern.sub(_escape_char, text) if pattern.search(text) else text

#: How a copy without a source site is shown.
NO_SITE = "(no source site)"


def human_bytes(n: int) -> str:
    """Binary units: ``512 B``, ``1.5 KiB``, ``6.0 MiB`` (one decimal from KiB up)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = _UNITS[0]
    for unit in _UNITS:
        value /= 1024.0
        if value < 1024.0:
            break
    return f"{value:.1f} {unit}"


def percent(part: float, whole: float | None) -> str:
    """``part`` as a share of ``whole`` (``12.5%``); ``-`` when the whole is unknown or zero."""
    if not whole:
        return "-"
    return f"{100.0 * part / whole:.1f}%"


def plural(n: int, one: str, many: str) -> str:
    """``1 copy`` / ``3 copies``."""
    return f"{n} {one if n == 1 else many}"


# --- op names --------------------------------------------------------------------------------


#: Ops users never call by name, shown with the call that reaches them: ``Tensor.item()`` (and ``bool(t)``,
#: ``int(t)``, ``float(t)``) is how code reaches ``_local_scalar_dense``, a device-to-host read.
_CALLED_AS = {"_local_scalar_dense": "item -> _local_scalar_dense"}


def short_op(op: str) -> str:
    """The tables' form: ``aten.copy_.default`` (or profiler-style ``aten::copy_``) -> ``copy_``;
    ``aten.cat.out`` -> ``cat.out``; ops users never call by name with the call that reaches them."""
    name = op
    for prefix in ("aten.", "aten::"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = name[: -len(".default")] if name.endswith(".default") else name
    return _CALLED_AS.get(name, name)


#: How tables name a verdict: "needed" (the JSON value) means the trace could not prove the copy
#: eliminable, not that it is necessary.
_VERDICT_LABELS = {"needed": "not proven"}


def verdict_label(verdict: str) -> str:
    """The verdict as tables show it ("not proven" for "needed")."""
    return _VERDICT_LABELS.get(verdict, verdict)


def status_label(status: str) -> str:
    """A ``copyhunt verify`` status as tables show it ("not testable" for "not-testable")."""
    return status.replace("-", " ")


def op_label(op: str) -> str:
    """The reasons' form: ``aten.copy_.default`` -> ``aten.copy_``; other overloads keep their name."""
    return op[: -len(".default")] if op.endswith(".default") else op


@functools.lru_cache(maxsize=4096)  # a few hundred distinct ops, asked about per copy by every rule
def op_name(op: str) -> str:
    """The bare op name, overload dropped: ``aten._to_copy.default`` -> ``_to_copy``."""
    name = op[len("aten.") :] if op.startswith("aten.") else op
    return name.split(".", 1)[0]


# --- paths and sites ---------------------------------------------------------------------------


def display_path(path: str, root: str | os.PathLike[str] | None = None) -> str:
    """How copyhunt shows (and keys) a source file, shortest first.

    Installed packages by their import path, the part after ``site-packages/`` (``torch/nn/...``,
    ``transformers/models/...``: the same on every machine, even with a virtualenv inside the
    project); else relative to ``root`` (default: the current directory) when the file lies below
    it; else the shortest import path under an import root (sys.path entries, the standard library,
    the folder holding copyhunt); else unchanged. Relative paths and ``<string>``-like names stay as
    they are. The ONE path shortener: tables show paths with it and the runner records trace paths
    with it (``copyhunt.attribution.rebase_paths``), so a recorded path shows unchanged.
    """
    if not path or path.startswith("<") or not os.path.isabs(path):
        return path
    posix = path.replace(os.sep, "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in posix:
            return posix.rsplit(marker, 1)[1]
    base = os.path.abspath(os.fspath(root) if root is not None else os.getcwd())
    rel = _below(path, base)
    if rel is not None:
        return rel.replace(os.sep, "/")
    rels = [r for r in (_below(path, top) for top in _import_roots()) if r is not None]
    if rels:
        return min(rels, key=len).replace(os.sep, "/")
    return path


def project_root(start: str | os.PathLike[str] | None = None) -> str:
    """The git work tree holding ``start`` (a file or folder; default: the current directory), else the
    current directory: what a trace's paths are recorded relative to (``TraceMeta.root``)."""
    here = os.path.abspath(os.fspath(start) if start is not None else os.getcwd())
    folder = here if os.path.isdir(here) else os.path.dirname(here)
    probe = folder
    while True:
        if os.path.exists(os.path.join(probe, ".git")):  # a folder, or a file in a linked worktree
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return os.getcwd()
        probe = parent


def _below(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` when it lies below it, else None."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return None
    return None if rel.startswith("..") else rel


def _import_roots() -> list[str]:
    # Absolute folders on sys.path (site-packages...), not the filesystem root, plus the folder holding
    # copyhunt itself: an editable install imports it through a finder, not a sys.path entry.
    roots = [os.path.abspath(p) for p in sys.path if p and os.path.isabs(p)]
    roots.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # .../copyhunt/text.py
    return [r for r in roots if os.path.dirname(r) != r]


def file_name(path: str) -> str:
    """The last component of a path (the reasons name files this way to stay one short line)."""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def short_site(frame: "Frame | None", root: str | os.PathLike[str] | None = None, missing: str = NO_SITE) -> str:
    """``path:line function`` with the path as ``display_path`` shows it; ``missing`` without a site."""
    if frame is None:
        return missing
    return f"{display_path(frame.file, root)}:{frame.line} {frame.function}"
