"""Small formatting helpers shared by the renderers: human byte sizes, short paths, op names."""

from __future__ import annotations

import os
import sys

from copyhunt.records import Frame
from copyhunt.units import human_bytes

__all__ = ["human_bytes", "short_path", "short_site", "short_op", "percent", "verdict_label", "status_label"]

#: How tables name a verdict: "needed" (the JSON value) means the trace could not prove the copy
#: eliminable, not that it is necessary.
_VERDICT_LABELS = {"needed": "not proven"}


def verdict_label(verdict: str) -> str:
    """The verdict as tables show it ("not proven" for "needed")."""
    return _VERDICT_LABELS.get(verdict, verdict)


def status_label(status: str) -> str:
    """A verification status as tables show it ("not testable" for "not-testable")."""
    return status.replace("-", " ")


def short_path(path: str, cwd: str | None = None) -> str:
    """``path`` relative to ``cwd`` (default: the current directory) when it lies below it.

    Elsewhere, a file under an import root (site-packages, an installed checkout) is shown as its
    import path (``vllm/model_executor/layer.py``): that names it as well and fits narrow terminals.
    """
    if not os.path.isabs(path):
        return path
    base = os.path.abspath(cwd if cwd is not None else os.getcwd())
    rel = _below(path, base)
    if rel is not None:
        return rel
    # The innermost import root holding the file gives the shortest import path.
    rels = (_below(path, root) for root in _import_roots())
    return min((rel for rel in rels if rel is not None), key=len, default=path)


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
    roots.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # .../copyhunt/report/units.py
    return [r for r in roots if os.path.dirname(r) != r]


def short_site(frame: Frame | None, cwd: str | None = None, missing: str = "(no source site)") -> str:
    """``path:line function`` with the path shortened relative to ``cwd``."""
    if frame is None:
        return missing
    return f"{short_path(frame.file, cwd)}:{frame.line} {frame.function}"


#: Ops users never call by name, shown with the call that reaches them: ``Tensor.item()`` (and ``bool(t)``,
#: ``int(t)``, ``float(t)``) is how code reaches ``_local_scalar_dense``, a device-to-host read.
_CALLED_AS = {"_local_scalar_dense": "item -> _local_scalar_dense"}


def short_op(op: str) -> str:
    """``aten.copy_.default`` (or profiler-style ``aten::copy_``) -> ``copy_``; ``aten.cat.out`` -> ``cat.out``."""
    name = op
    for prefix in ("aten.", "aten::"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = name[: -len(".default")] if name.endswith(".default") else name
    return _CALLED_AS.get(name, name)


def percent(part: float, whole: float | None) -> str:
    """``part`` as a share of ``whole`` (``12.5%``); ``-`` when the whole is unknown or zero."""
    if not whole:
        return "-"
    return f"{100.0 * part / whole:.1f}%"
