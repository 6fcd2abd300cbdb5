"""Experts backends by name. Optional ones (Triton, grouped_mm, AITER) are imported only when asked for,
so importing ``copyhunt_moe`` on a CPU box never needs triton or aiter.

Names: ``torch`` (copy-free dense pure torch), ``reference`` (the float32 oracle), ``library`` (pure torch,
library-style: always returns a fresh tensor), ``triton`` (``TritonExperts``, GPU, bf16),
``grouped_mm`` (``GroupedMMExperts``, torch._grouped_mm), ``aiter`` (AMD AITER on ROCm), ``auto``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable

import torch

from copyhunt_moe.errors import BackendUnavailableError, MoEConfigError
from copyhunt_moe.experts import ExpertsBackend

#: name -> "module:attribute" of a class (or factory) taking keyword arguments only.
BACKENDS: dict[str, str] = {
    "torch": "copyhunt_moe.torch_experts:TorchExperts",
    "reference": "copyhunt_moe.torch_experts:ReferenceExperts",
    "library": "copyhunt_moe.torch_experts:LibraryExperts",
    "triton": "copyhunt_moe.triton_experts:TritonExperts",
    "grouped_mm": "copyhunt_moe.grouped_mm_experts:GroupedMMExperts",
    "aiter": "copyhunt_moe.aiter_experts:AiterExperts",
}


def backend_names() -> list[str]:
    """Every registered backend name plus ``auto``."""
    return [*BACKENDS, "auto"]


def _load(name: str) -> Callable[..., ExpertsBackend]:
    module_name, attr = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # a missing optional dependency (triton, aiter) or a module not written yet
        raise BackendUnavailableError(f"MoE backend {name!r} is not available here: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise BackendUnavailableError(f"MoE backend {name!r}: {module_name} has no {attr}") from exc


def is_rocm() -> bool:
    """True on a ROCm (HIP) build of torch."""
    return getattr(torch.version, "hip", None) is not None


def auto_backend_name(device: torch.device | str) -> str:
    """``aiter`` on ROCm with AMD's AITER, ``triton`` on a CUDA GPU with triton, else ``torch``."""
    device = torch.device(device)
    if device.type != "cuda":
        return "torch"
    if is_rocm() and importlib.util.find_spec("aiter") is not None:
        try:
            _load("aiter")
            from copyhunt_moe.aiter_experts import import_aiter_fused_moe

            import_aiter_fused_moe()
            return "aiter"
        except BackendUnavailableError:
            pass  # e.g. the PyPI asyncio 'aiter': fall through to Triton
    if importlib.util.find_spec("triton") is not None:
        try:
            _load("triton")
            return "triton"
        except BackendUnavailableError:
            pass
    return "torch"


def make_backend(name: str, *, device: torch.device | str = "cpu", **kwargs: Any) -> ExpertsBackend:
    """Instantiate the backend called ``name`` (``auto`` picks by ``device``)."""
    if name == "auto":
        name = auto_backend_name(device)
    if name not in BACKENDS:
        raise MoEConfigError(f"unknown MoE backend {name!r}; valid: {', '.join(backend_names())}")
    backend = _load(name)(**kwargs)
    if not isinstance(backend, ExpertsBackend):
        raise BackendUnavailableError(f"MoE backend {name!r} does not implement the ExpertsBackend protocol")
    return backend


def backend_notes(backend: ExpertsBackend) -> list[str]:
    """Plain-text facts about a backend for a trace's ``meta.notes`` (destination mode and why).

    ``ModularMoE.apply`` hands them to ``copyhunt.note`` on every call; outside a hunt that does nothing.
    """
    notes = [f"moe backend: {backend.name} (destination passing: {'yes' if backend.supports_destination else 'no'})"]
    mode = getattr(backend, "destination_mode", None)
    if mode:
        reason = getattr(backend, "destination_reason", "")
        notes.append(f"moe {backend.name} destination mode: {mode}" + (f" ({reason})" if reason else ""))
    return notes

