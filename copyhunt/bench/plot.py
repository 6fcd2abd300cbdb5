"""``--plot FILE``: a PNG of time saved and speedup against tokens (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from copyhunt.errors import CopyhuntError


class PlotUnavailableError(CopyhuntError):
    """matplotlib is not installed."""


def plot_rows(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Two panels against tokens (log x): saved us with its spread and the ideal, and the speedup."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError("--plot needs matplotlib: pip install 'copyhunt[plot]'") from None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    all_m = sorted({r["tokens"] for r in rows})
    for mode, marker, color in (("graph", "o", "C0"), ("eager", "s", "C1")):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["tokens"])
        if not rs:
            continue
        m = [r["tokens"] for r in rs]
        ax1.errorbar(m, [r["saved_us"] for r in rs], yerr=[r["spread_us"] for r in rs], marker=marker, capsize=3, color=color, label=f"{mode}: saved")
        ax1.plot(m, [r["ideal_us"] for r in rs], linestyle="--", marker=marker, color=color, alpha=0.5, label=f"{mode}: ideal (2 copies/layer)")
        ax2.plot(m, [r["baseline_us"] / r["fixed_us"] if r["fixed_us"] else 1.0 for r in rs], marker=marker, color=color, label=mode)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_m, [str(m) for m in all_m])
        ax.set_xlabel("tokens (M)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax1.set_ylabel("time saved per step (us)")
    ax2.set_ylabel("speedup (baseline / fixed)")
    ax2.axhline(1.0, color="grey", linewidth=0.8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
