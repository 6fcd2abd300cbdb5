"""Render a ``bench moe`` result as a rich table on an injected Console (prints nothing else)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from copyhunt.bench.moe import BenchResult


def _fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def render_bench(result: BenchResult, console: Console) -> None:
    """Header, one row per (mode, tokens), the copy counts of one traced step, and the notes."""
    cfg = result.config
    kind = "CPU smoke run" if result.smoke else "GPU A/B"
    console.print(Text.assemble(
        ("copyhunt bench moe", "bold"),
        f" - {kind} on {result.device}: preset {cfg.preset}, "
        f"{cfg.layers} layer(s), backend {result.backend}, {cfg.rounds} interleaved A/B rounds",
    ))
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    # Short headers: the table must read at 80 columns (the legend below spells them out).
    for col in ("mode", "M", "base us", "fixed us", "saved", "+/-", "ideal", "real.", "saved%", "ok"):
        table.add_column(col, justify="left" if col in ("mode", "ok") else "right", no_wrap=True)
    for r in result.rows:
        table.add_row(
            r.mode, str(r.tokens), _fmt(r.baseline_us), _fmt(r.fixed_us), _fmt(r.saved_us), _fmt(r.spread_us),
            _fmt(r.ideal_us), _fmt(r.realized, 2), _fmt(r.saved_pct, 2), "yes" if r.fixed_not_slower else "SLOWER",
        )
    console.print(table)
    console.print(
        "us per decode step of all layers; saved = median of paired per-round differences (+/- = half its IQR); "
        "ideal = the 2 x layers output copies alone; real. = saved / ideal; saved% = of the baseline step; "
        "ok = fixed not slower beyond +/-"
    )
    cb, cf = result.copies_per_layer.get("baseline"), result.copies_per_layer.get("fixed")
    if cb is not None and cf is not None:
        console.print(
            f"traced one step of each path: d2d copies per layer {cb['d2d_per_layer']:g} -> {cf['d2d_per_layer']:g} "
            f"(MoE output copies {cb['output_copies_per_layer']:g} -> {cf['output_copies_per_layer']:g})"
        )
    for note in result.notes:
        console.print(f"note: {note}")
