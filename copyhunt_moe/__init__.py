"""The bundled MoE: routing, pure-torch experts, vLLM-style modular kernel, presets and demo targets.

A package apart, and user code to the tracer like any model: of copyhunt it uses only the public
``copyhunt.note`` (a no-op outside a hunt), through which each layer says which backend ran. Optional
backends (Triton, grouped_mm, AITER) load lazily through ``copyhunt_moe.backends.make_backend``.
"""

from __future__ import annotations

from copyhunt_moe.backends import backend_names, backend_notes, make_backend
from copyhunt_moe.errors import BackendUnavailableError, MoEConfigError, MoEError, UnknownPresetError
from copyhunt_moe.experts import ExpertsBackend
from copyhunt_moe.layer import MoELayer, MoEStack
from copyhunt_moe.modular import ModularMoE, copy_sites
from copyhunt_moe.presets import PRESETS, MoEPreset, get_preset
from copyhunt_moe.routing import route
from copyhunt_moe.workspace import WorkspaceManager

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
