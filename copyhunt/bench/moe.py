"""``copyhunt bench moe``: A/B of the bundled MoE's baseline and fixed paths, in ONE run.

For each token count M and mode (CUDA graph or eager) it measures, with interleaved A/B
repetitions (baseline and fixed alternate, order flipped every round, so drift hits both):

- baseline us and fixed us per decode step of L layers sharing one workspace (medians);
- saved us = median of the paired per-round differences, and its measured spread (half the
  inter-quartile range of those differences);
- ideal us: the standalone time of the 2 x L output copies (M x K, the model dtype) run the same
  way (as one graph, or eagerly), i.e. the most that removing them can save;
- realized = saved / ideal, and saved as % of the baseline step;

then traces one iteration of each path with ``copyhunt.hunt`` and counts d2d copies per layer
(2 -> 0 on the bundled MoE). Without a GPU it runs a CPU smoke version (``tiny`` preset, eager)
that still shows the copy counts; its times are CPU times and say so.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from copyhunt.errors import CopyhuntError

DEFAULT_TOKENS = (1, 8, 64, 256, 1024, 4096, 16384)
SMOKE_TOKENS = (1, 8)
MODES = ("graph", "eager")

#: progress(description, done, total)
Progress = Callable[[str, int, int], None]


class BenchConfigError(CopyhuntError):
    """A bench option is out of range (names the option and what would be valid)."""


@dataclass(frozen=True)
class BenchConfig:
    """What one ``bench moe`` run measures."""

    preset: str = "minimax-m2.5-tp4"
    tokens: tuple[int, ...] = DEFAULT_TOKENS
    layers: int = 4
    modes: tuple[str, ...] = MODES
    rounds: int = 15  # interleaved A/B rounds per (mode, M)
    min_sample_ms: float = 2.0  # each timing sample repeats the step until it lasts this long
    backend: str = "auto"
    device: str = "cuda"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tokens or any(int(m) < 1 for m in self.tokens):
            raise BenchConfigError(f"token counts must be integers >= 1, got {list(self.tokens)}")
        if self.layers < 1:
            raise BenchConfigError(f"--layers must be >= 1, got {self.layers}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise BenchConfigError(f"--mode must be graph, eager or both, got {', '.join(self.modes) or 'nothing'}")
        if self.rounds < 3:
            raise BenchConfigError(f"rounds must be >= 3 to measure a spread, got {self.rounds}")


@dataclass(frozen=True)
class BenchRow:
    """One (mode, M) result; times in microseconds per decode step of ``layers`` layers."""

    mode: str
    tokens: int
    baseline_us: float
    fixed_us: float
    saved_us: float
    spread_us: float  # half the IQR of the paired per-round differences
    ideal_us: float  # standalone time of the 2 x layers output copies
    realized: float | None  # saved / ideal
    saved_pct: float  # saved as % of the baseline step
    baseline_iqr_us: float
    fixed_iqr_us: float
    max_abs_diff: float  # |baseline - fixed| outputs (same weights, same input)

    @property
    def fixed_not_slower(self) -> bool:
        """Fixed is not slower than baseline beyond the measured spread."""
        return self.saved_us >= -self.spread_us


@dataclass
class BenchResult:
    """Everything one run produced (``to_json`` is what ``--json`` prints)."""

    config: BenchConfig
    device: str
    backend: str
    rows: list[BenchRow] = field(default_factory=list)
    copies_per_layer: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> counts
    smoke: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document."""
        return {
            "schema": "copyhunt.bench.moe/1",
            "config": {**asdict(self.config), "tokens": list(self.config.tokens), "modes": list(self.config.modes)},
            "device": self.device,
            "backend": self.backend,
            "smoke": self.smoke,
            "rows": [{**asdict(r), "fixed_not_slower": r.fixed_not_slower} for r in self.rows],
            "copies_per_layer": self.copies_per_layer,
            "notes": self.notes,
        }


# --- timing primitives -----------------------------------------------------------------------


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


class _Timer:
    """Times ``fn`` per call: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device, min_sample_ms: float) -> None:
        self.cuda = device.type == "cuda"
        self.min_sample_ms = min_sample_ms
        self.reps: dict[int, int] = {}

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, key: int, fn: Callable[[], Any]) -> float:
        """Microseconds per call of ``fn``, repeating it so a sample lasts ``min_sample_ms``."""
        n = self.reps.get(key)
        if n is None:  # calibrate once per function so every round repeats it the same number of times
            self._sync()
            t0 = time.perf_counter()
            fn()
            self._sync()
            one_ms = max((time.perf_counter() - t0) * 1e3, 1e-3)
            n = max(1, min(1000, int(self.min_sample_ms / one_ms) + 1))
            self.reps[key] = n
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) * 1e3 / n
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) * 1e6 / n


def _graph(fn: Callable[[], Any], warmup: int = 2) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Capture ``fn`` in a CUDA graph after warm-up on a side stream (Triton compiles there)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    torch.cuda.synchronize()
    return g, out


# --- the A/B -----------------------------------------------------------------------------------


def _ab(timer: _Timer, key: int, run_a: Callable[[], Any], run_b: Callable[[], Any], rounds: int) -> tuple[list[float], list[float]]:
    """Interleaved A/B samples; the order flips every round so slow drift hits both paths alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(2):  # warm-up: first calls pay allocation and kernel loading
        run_a()
        run_b()
    for r in range(rounds):
        if r % 2 == 0:
            a.append(timer.once(2 * key, run_a))
            b.append(timer.once(2 * key + 1, run_b))
        else:
            b.append(timer.once(2 * key + 1, run_b))
            a.append(timer.once(2 * key, run_a))
    return a, b


def _row(mode: str, m: int, base: list[float], fixed: list[float], ideal: list[float], max_diff: float) -> BenchRow:
    diffs = [x - y for x, y in zip(base, fixed)]
    d25, d50, d75 = _quartiles(diffs)
    b25, b50, b75 = _quartiles(base)
    f25, f50, f75 = _quartiles(fixed)
    ideal_us = statistics.median(ideal)
    return BenchRow(
        mode=mode, tokens=m, baseline_us=round(b50, 2), fixed_us=round(f50, 2), saved_us=round(d50, 2),
        spread_us=round((d75 - d25) / 2, 2), ideal_us=round(ideal_us, 2),
        realized=round(d50 / ideal_us, 3) if ideal_us > 0 else None,
        saved_pct=round(100.0 * d50 / b50, 2) if b50 > 0 else 0.0,
        baseline_iqr_us=round(b75 - b25, 2), fixed_iqr_us=round(f75 - f25, 2), max_abs_diff=max_diff,
    )


def _copy_counts(stack: Any, x: torch.Tensor, layers: int) -> dict[str, dict[str, float]]:
    """Trace one step of each path with copyhunt and count d2d copies per layer."""
    from copyhunt.hunting import hunt
    from copyhunt_moe import copy_sites

    sites = {(s.file, s.line) for s in copy_sites().values()}
    counts: dict[str, dict[str, float]] = {}
    for path in ("baseline", "fixed"):
        stack.set_mode(path)
        with torch.no_grad(), hunt() as h:
            stack(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        # Counting needs the records only (no verdicts): the trace as captured.
        d2d = [c for c in h.trace.copies if c.kind == "d2d" and not c.noop]
        at_sites = [c for c in d2d if c.site is not None and (c.site.file, c.site.line) in sites]
        counts[path] = {
            "d2d_per_layer": len(d2d) / layers,
            "output_copies_per_layer": len(at_sites) / layers,
            "output_copy_bytes_per_layer": sum(c.moved_bytes for c in at_sites) / layers,
        }
    return counts


def run_bench(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run the whole A/B (GPU), or the CPU smoke version when the config's device is the CPU."""
    from copyhunt_moe import MoEError, MoEStack, get_preset, make_backend

    device = torch.device(config.device)
    smoke = device.type != "cuda"
    try:
        preset = get_preset(config.preset)
        backend = make_backend(config.backend, device=device)
    except MoEError as exc:  # the demo's own errors (it is a package apart): one line, exit 2
        raise BenchConfigError(str(exc)) from None
    stack = MoEStack(preset, backend, layers=config.layers, mode="baseline", device=device, seed=config.seed)
    name = torch.cuda.get_device_name(device) if not smoke else "cpu"
    result = BenchResult(config=config, device=name, backend=backend.name, smoke=smoke)
    if smoke:
        result.notes.append("no GPU: CPU smoke run (eager only); times are CPU wall times, not GPU results")
    timer = _Timer(device, config.min_sample_ms)
    gen = torch.Generator(device=device)
    gen.manual_seed(10_000 + config.seed)
    total = len(config.tokens) * len(config.modes) + 1
    done = 0
    key = 0

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(what, done, total)

    if progress is not None:
        progress("starting", 0, total)
    for m in config.tokens:
        x = torch.randn((m, preset.hidden), generator=gen, device=device, dtype=torch.bfloat16)
        # Standalone copies: the same 2 x layers M x K copies as the baseline makes, nothing else.
        # Like the baseline, every layer writes the ONE shared workspace and a fresh output.
        src = torch.randn_like(x)
        ws = torch.empty_like(x)
        outs = [torch.empty_like(x) for _ in range(config.layers)]

        def copies_only() -> None:
            for o in outs:
                ws.copy_(src)  # copy #1: the experts' fresh result into the shared workspace
                o.copy_(ws)  # copy #2: finalize, workspace into the caller's output

        for mode in config.modes:
            tick(f"{mode} M={m}")
            key += 1
            with torch.no_grad():
                if mode == "graph":
                    stack.set_mode("baseline")
                    g_base, out_base = _graph(lambda: stack(x))
                    stack.set_mode("fixed")
                    g_fixed, out_fixed = _graph(lambda: stack(x))
                    g_copy, _ = _graph(copies_only)
                    run_a, run_b, run_ideal = g_base.replay, g_fixed.replay, g_copy.replay
                    g_base.replay()
                    g_fixed.replay()
                    torch.cuda.synchronize()
                    max_diff = (out_base.float() - out_fixed.float()).abs().max().item()
                else:
                    kb = _mode_kernels(stack, "baseline")
                    out_base = stack(x)
                    kf = _mode_kernels(stack, "fixed")
                    out_fixed = stack(x)
                    max_diff = (out_base.float() - out_fixed.float()).abs().max().item()

                    def run_a() -> Any:
                        _set_kernels(stack, kb)
                        return stack(x)

                    def run_b() -> Any:
                        _set_kernels(stack, kf)
                        return stack(x)

                    run_ideal = copies_only
                base, fixed = _ab(timer, key, run_a, run_b, config.rounds)
                ideal = [timer.once(-key, run_ideal) for _ in range(config.rounds)]
            result.rows.append(_row(mode, m, base, fixed, ideal, max_diff))
            if mode == "graph":
                del g_base, g_fixed, g_copy, out_base, out_fixed
                torch.cuda.synchronize()
    tick("tracing one step of each path")
    x = torch.randn((config.tokens[0], preset.hidden), generator=gen, device=device, dtype=torch.bfloat16)
    result.copies_per_layer = _copy_counts(stack, x, config.layers)
    return result


def _mode_kernels(stack: Any, mode: str) -> list[Any]:
    """The per-layer ModularMoE objects of ``mode`` (switching them costs no allocation in the timed loop)."""
    stack.set_mode(mode)
    return [layer.kernel for layer in stack.layers]


def _set_kernels(stack: Any, kernels: list[Any]) -> None:
    for layer, k in zip(stack.layers, kernels):
        layer.kernel = k


def smoke_config(layers: int = 2, tokens: tuple[int, ...] | None = None, rounds: int = 5) -> BenchConfig:
    """The CPU smoke version: ``tiny`` preset, eager only, the torch backend."""
    return BenchConfig(
        preset="tiny", tokens=tokens or SMOKE_TOKENS, layers=layers, modes=("eager",), rounds=rounds,
        min_sample_ms=1.0, backend="torch", device="cpu",
    )
