"""What a reader wrote, next to what PyTorch ran: the source line of a site, and the Python call in it
that became the recorded aten op when the two differ (``.t().contiguous()`` runs ``clone``,
``.to(torch.float16)`` runs ``_to_copy``).

The source text is read through ONE accessor, :func:`site_text`: the text the trace stored at
capture time (``Frame.source_text``, when the trace carries it), else the line of a regular file under
the current directory as it is now (never any other file a trace names).
"""

from __future__ import annotations

import re
from typing import Any

from copyhunt.text import op_name

#: aten op (short name) -> the Python calls that run it, most specific first.
_CALLS: dict[str, tuple[str, ...]] = {
    "clone": ("contiguous", "clone", "reshape", "flatten", "repeat_interleave"),
    "_to_copy": ("to", "float", "half", "bfloat16", "double", "long", "int", "bool", "cuda", "cpu", "type", "type_as"),
    "copy_": ("copy_",),
    "cat": ("cat", "concat", "concatenate", "hstack", "vstack", "column_stack"),
    "stack": ("stack",),
    "_unsafe_view": ("reshape", "flatten"),
    "repeat": ("repeat",),
    "expand_copy": ("expand",),
    "index": ("index_select",),
}


def site_text(frame: Any) -> str | None:
    """The source line of ``frame``: as stored in the trace when it has it, else read from the file now."""
    if frame is None:
        return None
    stored = getattr(frame, "source_text", None)
    if stored:
        return str(stored).strip()
    import os

    from copyhunt.validation import source_line

    # A trace without stored text (written before copyhunt stored it): only a regular, size-limited
    # file under the current directory is read, never a file anywhere a trace names (issue 18).
    return source_line(frame.file, frame.line, root=os.getcwd())


def python_call(op: str, text: str | None) -> str | None:
    """The call in ``text`` that ran ``op`` when its name differs from the op's (``.contiguous()`` for
    ``aten.clone``); None when the line calls the op by its own name or no known call is there."""
    if not text:
        return None
    name = op_name(op)
    calls = _CALLS.get(name)
    if calls is None:
        return None
    if re.search(rf"(?<![\w.])(torch\.)?{re.escape(name)}\(|\.{re.escape(name)}\(", text):
        return None  # written as the op itself: nothing to add
    found: list[tuple[int, str]] = []
    for call in calls:
        m = re.search(rf"\.{re.escape(call)}\(", text)
        if m:
            found.append((m.start(), f".{call}()"))
        m = re.search(rf"(?<![\w.])torch\.{re.escape(call)}\(", text)
        if m:
            found.append((m.start(), f"torch.{call}()"))
    if not found:
        if name == "copy_" and re.search(r"\]\s*=(?!=)", text):
            return "[...] ="  # slice assignment runs copy_
        return None
    return min(found)[1]


def code_only(text: str | None) -> str | None:
    """``text`` without a trailing ``# comment`` (a ``#`` inside a string literal stays)."""
    if not text:
        return text
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote is not None:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return text[:i].rstrip() or text
    return text
