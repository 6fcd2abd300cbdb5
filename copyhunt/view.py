"""A trace as one reader sees it: the copies a selection is about, each with its timing and findings.

Views apply when reading, never when capturing: a trace holds every copy, and a ``TraceView``
narrows it for a table, a budget rule, a diff or a test marker without changing it. Judging is the
analysis' business (``copyhunt.analysis.ensure_judged``); a view shows what the trace carries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from copyhunt.records import Copy, Trace, TraceMeta
from copyhunt.selection import ALL, Selection


@dataclass(frozen=True)
class TraceView:
    """The copies of ``trace`` that ``selection`` is about, in trace order."""

    trace: Trace
    selection: Selection
    copies: tuple[Copy, ...]

    @property
    def meta(self) -> TraceMeta:
        """The trace's metadata."""
        return self.trace.meta

    @property
    def judged(self) -> bool:
        """True once the verdict analysis ran over the trace."""
        return self.trace.judged

    @property
    def recorded(self) -> bool:
        """True when this view is the one recorded in the trace (``meta.view``: a hunt's kinds / region)."""
        return self.selection == recorded_selection(self.trace)

    def to_trace(self) -> Trace:
        """A trace holding only these copies (timings, findings and verifications re-keyed), its view recorded in meta."""
        if self.selection.everything:
            return self.trace
        copies = self.copies
        return replace(
            self.trace,
            meta=replace(self.trace.meta, view=self.selection.to_json()),
            copies=tuple(c.record for c in copies),
            timings={i: c.device for i, c in enumerate(copies) if c.device is not None},
            findings=None if not self.trace.judged else {i: c.findings for i, c in enumerate(copies) if c.findings},
            verifications={i: c.verification for i, c in enumerate(copies) if c.verification is not None},
        )


def recorded_selection(trace: Trace) -> Selection:
    """The selection a trace asks to be shown with (``meta.view``; every copy when none)."""
    return Selection.from_json(trace.meta.view)


def view(trace: Trace, selection: Selection | None = None, root: str | os.PathLike[str] | None = None) -> TraceView:
    """The copies of ``trace`` that ``selection`` is about (None: every copy); site globs relative to ``root``."""
    selection = selection if selection is not None else ALL
    return TraceView(trace, selection, selection.select(trace.read_copies(), root))
