"""``copyhunt.note(text)``: a program's own statement for the trace's notes; a no-op outside a hunt.

A traced program (a model, a kernel library, the bundled MoE demo) says here what the trace cannot
show by itself, e.g. which backend ran or why a fallback copied. The running hunt collects the notes
(each distinct text once, in first-seen order) into ``meta.notes``. Standard library only and cheap:
a program may call it on every step.
"""

from __future__ import annotations

# The notes of the running hunt, or None when none runs (hunts do not nest, so one list is enough).
# list.append is atomic: notes may come from any thread the program starts.
_sink: list[str] | None = None


def note(text: str) -> None:
    """Add ``text`` to the notes of the running hunt's trace; does nothing outside a hunt."""
    sink = _sink
    if sink is not None:
        sink.append(str(text))


def open_notes() -> None:
    """Start collecting (the hunt calls this when it starts)."""
    global _sink
    _sink = []


def close_notes() -> list[str]:
    """Stop collecting; the distinct notes in the order they were first given."""
    global _sink
    sink, _sink = _sink, None
    return list(dict.fromkeys(sink or ()))
