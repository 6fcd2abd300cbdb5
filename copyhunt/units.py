"""Units shared by every layer that words sizes (analysis reasons, reports): standard library only."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB")


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
