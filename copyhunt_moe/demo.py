"""Demo targets: ``copyhunt trace copyhunt_moe.demo:baseline`` and ``copyhunt trace copyhunt_moe.demo:fixed``.

One decode step through a small stack of MoE layers sharing one workspace. Traced, ``baseline`` shows
exactly two d2d copies per MoE layer (``modular.py``'s ``experts-copy`` and ``finalize-copy`` lines) and
``fixed`` shows neither.

Defaults (each overridable by a keyword argument or an environment variable; the trace command calls
the functions with no arguments):

==============  ========================  ==================================  =======================
argument        environment variable      CPU default                         GPU default
==============  ========================  ==================================  =======================
preset          COPYHUNT_MOE_PRESET       tiny                                minimax-m2.5-tp4
layers          COPYHUNT_MOE_LAYERS       4                                   4
tokens          COPYHUNT_MOE_TOKENS       4                                   8
backend         COPYHUNT_MOE_BACKEND      torch                               auto (aiter/triton)
device          COPYHUNT_MOE_DEVICE       cpu                                 cuda
seed            COPYHUNT_MOE_SEED         0                                   0
==============  ========================  ==================================  =======================
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch

from copyhunt_moe.backends import make_backend
from copyhunt_moe.errors import MoEConfigError
from copyhunt_moe.layer import MoEStack
from copyhunt_moe.presets import get_preset


@dataclass(frozen=True)
class DemoConfig:
    """Everything that selects a demo run."""

    preset: str
    layers: int
    tokens: int
    backend: str
    device: str
    seed: int = 0


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MoEConfigError(f"{name} must be an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise MoEConfigError(f"{name} must be an integer >= {minimum}, got {raw!r}")
    return value


def resolve_config(
    preset: str | None = None,
    layers: int | None = None,
    tokens: int | None = None,
    backend: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> DemoConfig:
    """Fill unset arguments from the environment, then from CPU/GPU defaults."""
    device = device or os.environ.get("COPYHUNT_MOE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = torch.device(device).type == "cuda"
    preset = preset or os.environ.get("COPYHUNT_MOE_PRESET") or ("minimax-m2.5-tp4" if on_gpu else "tiny")
    get_preset(preset)  # fail early with the list of valid names
    config = DemoConfig(
        preset=preset,
        layers=layers if layers is not None else _env_int("COPYHUNT_MOE_LAYERS", 4),
        tokens=tokens if tokens is not None else _env_int("COPYHUNT_MOE_TOKENS", 8 if on_gpu else 4),
        backend=backend or os.environ.get("COPYHUNT_MOE_BACKEND") or ("auto" if on_gpu else "torch"),
        device=device,
        seed=seed if seed is not None else _env_int("COPYHUNT_MOE_SEED", 0, minimum=0),
    )
    if config.layers < 1 or config.tokens < 1:
        raise MoEConfigError(f"layers and tokens must be >= 1, got layers={config.layers} tokens={config.tokens}")
    return config


_STACKS: dict[DemoConfig, MoEStack] = {}
_LOCK = threading.Lock()


def build_stack(config: DemoConfig, mode: str) -> MoEStack:
    """The stack for ``config`` (built once per config and cached: repeated runs reuse the weights)."""
    with _LOCK:
        stack = _STACKS.get(config)
        if stack is None:
            backend = make_backend(config.backend, device=config.device)
            stack = MoEStack(
                get_preset(config.preset), backend, layers=config.layers, mode=mode,
                device=config.device, seed=config.seed,
            )
            _STACKS[config] = stack
        stack.set_mode(mode)
        return stack


def make_input(config: DemoConfig) -> torch.Tensor:
    """Seeded decode-step activations [tokens, hidden] in bf16 on the demo device."""
    gen = torch.Generator(device=config.device)
    gen.manual_seed(10_000 + config.seed)
    hidden = get_preset(config.preset).hidden
    return torch.randn((config.tokens, hidden), generator=gen, device=config.device, dtype=torch.bfloat16)


def run(mode: str, **overrides: object) -> torch.Tensor:
    """One decode step of the demo stack in ``mode`` (``baseline`` or ``fixed``)."""
    config = resolve_config(**overrides)  # type: ignore[arg-type]
    stack = build_stack(config, mode)
    x = make_input(config)
    with torch.no_grad():
        out = stack(x)
    # The step is over: the scratch holds nothing anyone may read (the next step overwrites it
    # first), so drop it. A trace of the step then records the workspace dying with the step,
    # which is what lets the verdict analysis judge the last layer's finalize copy.
    stack.workspace.release()
    if out.is_cuda:
        torch.cuda.synchronize()  # so a profiler sees the whole step inside the traced call
    return out


def baseline(
    preset: str | None = None,
    layers: int | None = None,
    tokens: int | None = None,
    backend: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """vLLM 0.19.0's path: two M x K output copies per MoE layer."""
    return run("baseline", preset=preset, layers=layers, tokens=tokens, backend=backend, device=device, seed=seed)


def fixed(
    preset: str | None = None,
    layers: int | None = None,
    tokens: int | None = None,
    backend: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """The destination-passing path: no output copies when the backend honours the destination."""
    return run("fixed", preset=preset, layers=layers, tokens=tokens, backend=backend, device=device, seed=seed)


main = baseline  # the default demo of `copyhunt trace`
