"""`copyhunt bench moe`: A/B of the bundled MoE's baseline and fixed paths (GPU; CPU smoke without one)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from copyhunt.cli import options
from copyhunt.cli.app import CopyhuntCommand, app
from copyhunt.cli.console import stderr_console, stdout_console
from copyhunt.errors import EXIT_OK

bench_app = typer.Typer(name="bench", help="Benchmarks: `copyhunt bench moe` (A/B of the MoE output-copy fix).", no_args_is_help=True,
                      short_help="A/B of the MoE output-copy fix (GPU; CPU smoke run).",
                      rich_markup_mode=None)
app.add_typer(bench_app, name="bench")


def parse_tokens(raw: str | None) -> tuple[int, ...] | None:
    """``"1,8,64"`` -> (1, 8, 64); a usage error names the bad value."""
    if raw is None:
        return None
    try:
        values = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{raw!r} is not a comma-separated list of integers", param_hint="--tokens") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{raw!r}: token counts must be integers >= 1", param_hint="--tokens")
    return values


@bench_app.command("moe", cls=CopyhuntCommand)
def bench_moe(
    preset: str = typer.Option("minimax-m2.5-tp4", "--preset", metavar="NAME", help="MoE shape preset (GPU run)."),
    tokens: Optional[str] = typer.Option(None, "--tokens", metavar="N,N,...", help="Token counts, comma-separated. Default 1,8,64,256,1024,4096,16384 (CPU smoke: 1,8)."),
    layers: int = typer.Option(4, "--layers", metavar="N", help="MoE layers in the decode step (they share one workspace)."),
    mode: options.BenchMode = typer.Option(options.BenchMode.both, "--mode", metavar="graph|eager|both", help="Time CUDA-graph replays, eager calls, or both."),
    rounds: int = typer.Option(15, "--rounds", metavar="N", help="Interleaved A/B rounds per point (>= 3)."),
    backend: str = typer.Option("auto", "--backend", metavar="NAME", help="MoE experts backend (auto: Triton on CUDA, AITER on ROCm)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout, nothing else."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE", help="Write a PNG of time saved and speedup against tokens (needs matplotlib)."),
) -> int:
    """A/B the MoE baseline (2 output copies per layer) against the fixed path, in one run."""
    import torch

    from copyhunt.bench.moe import BenchConfig, run_bench, smoke_config
    from copyhunt.bench.table import render_bench

    toks = parse_tokens(tokens)
    if plot is not None:
        import importlib.util

        from copyhunt.bench.plot import PlotUnavailableError

        if importlib.util.find_spec("matplotlib") is None:  # fail before a long run, not after it
            raise PlotUnavailableError("--plot needs matplotlib: pip install 'copyhunt[plot]'")
    err = stderr_console()
    if torch.cuda.is_available():
        modes = ("graph", "eager") if mode is options.BenchMode.both else (mode.value,)
        config = BenchConfig(preset=preset, tokens=toks or BenchConfig.tokens, layers=layers, modes=modes, rounds=rounds, backend=backend)
    else:
        err.print("copyhunt: no GPU here: running the CPU smoke version (tiny preset, eager; CPU times, copy counts)")
        config = smoke_config(layers=layers, tokens=toks, rounds=max(3, min(rounds, 5)))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("bench moe", total=1)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"bench moe: {what}", completed=done, total=total)

        result = run_bench(config, progress=progress)
    doc = result.to_json()
    if plot is not None:
        from copyhunt.bench.plot import plot_rows

        where = plot_rows(doc["rows"], plot, title=f"MoE output copies: {config.preset}, {config.layers} layers, {result.device}")
        err.print(f"plot written to {where}")
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    else:
        render_bench(result, stdout_console(file=sys.stdout))
    return EXIT_OK
