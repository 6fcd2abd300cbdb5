"""Errors of the bundled MoE package (a package apart: copyhunt's CLI maps them onto its exit codes)."""

from __future__ import annotations


class MoEError(Exception):
    """An expected failure of the MoE package: one line that names the bad value and what is valid."""


class UnknownPresetError(MoEError, ValueError):
    """A preset name that is not in ``copyhunt_moe.presets.PRESETS``."""


class MoEConfigError(MoEError, ValueError):
    """An invalid shape, dtype or option given to the MoE package."""


class BackendUnavailableError(MoEError, RuntimeError):
    """An experts backend was asked for by name but cannot run here (missing package, no GPU...)."""


class AiterImpostorError(BackendUnavailableError):
    """The importable ``aiter`` is not AMD's AITER (e.g. the unrelated PyPI asyncio library)."""
