"""The eliminable-copies summary: counts, bytes and device time of the copies that look avoidable."""

from __future__ import annotations

from dataclasses import dataclass

from copyhunt.records import VERDICTS, Copy, is_eliminable, moved_bytes
from copyhunt.text import human_bytes
from copyhunt.view import TraceView


@dataclass(frozen=True)
class VerdictTotal:
    """Copies, bytes and device time that share one verdict."""

    verdict: str
    copies: int
    bytes: int
    device_us: float | None  # None when none of these copies has device timing


@dataclass(frozen=True)
class EliminableSummary:
    """How much of a trace's copying looks eliminable (verdict other than "needed")."""

    copies: int  # eliminable copies
    total_copies: int
    bytes: int  # bytes those copies move (noop copies move none)
    total_bytes: int
    device_us: float | None  # device time of the eliminable copies; None without device timing
    total_device_us: float | None
    judged: bool  # False when the verdict analysis did not run over the trace
    by_verdict: tuple[VerdictTotal, ...]  # every verdict present, records.VERDICTS order

    def line(self) -> str:
        """``3 of 8 copies, 1.5 MiB, 12.0 us look eliminable`` (no ``us`` part without device timing)."""
        if not self.judged:
            return f"{self.total_copies} copies, not judged"
        parts = [f"{self.copies} of {self.total_copies} copies", human_bytes(self.bytes)]
        if self.device_us is not None:
            parts.append(f"{self.device_us:.1f} us")
        return ", ".join(parts) + " look eliminable"


def _device_us(copies: list[Copy]) -> float | None:
    timed = [c.device.time_us for c in copies if c.device is not None]
    return sum(timed) if timed else None


def eliminable_summary(view: TraceView) -> EliminableSummary:
    """Totals of the eliminable copies a view shows (pure; verdicts as judge() found them)."""
    copies = list(view.copies)
    elim = [c for c in copies if is_eliminable(c.verdict)]
    any_timed = any(c.device is not None for c in copies)
    groups: list[VerdictTotal] = []
    for verdict in VERDICTS:
        members = [c for c in copies if c.verdict == verdict]
        if members:
            groups.append(VerdictTotal(verdict, len(members), moved_bytes(members), _device_us(members)))
    elim_us = _device_us(elim)
    return EliminableSummary(
        copies=len(elim),
        total_copies=len(copies),
        bytes=moved_bytes(elim),
        total_bytes=moved_bytes(copies),
        device_us=(elim_us if elim_us is not None else 0.0) if any_timed else None,
        total_device_us=_device_us(copies),
        judged=view.judged,
        by_verdict=tuple(groups),
    )
