"""The bundled MoE: routing, pure-torch experts, vLLM-style modular kernel, presets and demo targets.

Stands alone: imports nothing from copyhunt's profiler side. Optional backends (Triton, grouped_mm,
AITER) load lazily through ``copyhunt.moe.backends.make_backend``.
"""

from __future__ import annotations

from copyhunt.moe.backends import backend_names, backend_notes, make_backend
from copyhunt.moe.errors import BackendUnavailableError, MoEConfigError, MoEError, UnknownPresetError
from copyhunt.moe.experts import ExpertsBackend
from copyhunt.moe.layer import MoELayer, MoEStack
from copyhunt.moe.modular import ModularMoE, copy_sites
from copyhunt.moe.presets import PRESETS, MoEPreset, get_preset
from copyhunt.moe.routing import route
from copyhunt.moe.workspace import WorkspaceManager

__all__ = [
    "BackendUnavailableError",
    "ExpertsBackend",
    "MoEConfigError",
    "MoEError",
    "MoELayer",
    "MoEPreset",
    "MoEStack",
    "ModularMoE",
    "PRESETS",
    "UnknownPresetError",
    "WorkspaceManager",
    "backend_names",
    "backend_notes",
    "copy_sites",
    "get_preset",
    "make_backend",
    "route",
]
