"""AMD AITER experts backend (ROCm): ``aiter.fused_moe.fused_moe`` behind the ``ExpertsBackend`` interface.

AITER's ``fused_moe(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask=None, activation=Silu,
quant_type=No, ...)`` takes vLLM's layouts (w1 = w13 [E, 2N, K], w2 [E, K, N]) and allocates its own
result (``moe_buf``), so vLLM 0.19's ``AiterExperts`` copies it into ``fused_out`` (copy #1).
How the installed AITER can write into the caller's buffer instead, detected by inspecting the
package (never from a version string):

``output-kwarg``      ``fused_moe`` has a real ``output`` parameter (ROCm/aiter #4617, "accept a
                      caller-provided output buffer"); AITER returns that buffer.
``override-context``  the package offers the thread-local ``output_buffer_override(buf)`` context
                      manager (AITER commit da318d0; used by vLLM #41020): ``fused_moe`` called inside
                      it writes into ``buf``.
``copy-fallback``     neither: the result is AITER's fresh tensor and the modular kernel copies it.

``AiterExperts.destination_mode`` / ``destination_reason`` say which one was chosen and why;
``copyhunt_moe.backends.backend_notes`` turns them into trace ``meta.notes`` lines.

The PyPI package named ``aiter`` is an unrelated asyncio library: it has no ``aiter/fused_moe.py``,
and is refused with ``AiterImpostorError`` before anything of it is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from copyhunt_moe.errors import AiterImpostorError, BackendUnavailableError

DESTINATION_MODES = ("output-kwarg", "override-context", "copy-fallback")

_NOT_AMD = (
    "AMD's AITER is built from github.com/ROCm/aiter (package 'amd-aiter'); "
    "the PyPI package 'aiter' is an unrelated asyncio library"
)


def _is_rocm() -> bool:
    return getattr(torch.version, "hip", None) is not None


def check_aiter_package() -> Path:
    """Locate an importable ``aiter`` and check, without importing it, that it is AMD's; return its folder."""
    spec = importlib.util.find_spec("aiter")
    if spec is None:
        raise BackendUnavailableError(f"MoE backend 'aiter': no module named 'aiter' ({_NOT_AMD})")
    locations = list(spec.submodule_search_locations or [])
    if not locations:  # a single-file module: certainly not AMD's package
        raise AiterImpostorError(
            f"the importable 'aiter' ({spec.origin}) is a single module without aiter.fused_moe: not AMD's AITER. "
            f"{_NOT_AMD}"
        )
    for folder in locations:
        if (Path(folder) / "fused_moe.py").is_file() or (Path(folder) / "fused_moe").is_dir():
            return Path(folder)
    raise AiterImpostorError(
        f"the importable 'aiter' ({locations[0]}) has no aiter.fused_moe: not AMD's AITER. {_NOT_AMD}"
    )


def import_aiter_fused_moe() -> ModuleType:
    """Import AMD's ``aiter.fused_moe`` on a ROCm build of torch, or explain why it cannot be used."""
    check_aiter_package()
    if not _is_rocm():
        raise BackendUnavailableError(
            f"MoE backend 'aiter' needs a ROCm build of torch; this torch {torch.__version__} is not one"
        )
    try:
        module = importlib.import_module("aiter.fused_moe")
    except ImportError as exc:  # AMD's package, but broken here (missing JIT build, wrong ROCm...)
        raise BackendUnavailableError(f"MoE backend 'aiter': importing aiter.fused_moe failed: {exc}") from exc
    if not callable(getattr(module, "fused_moe", None)):
        raise AiterImpostorError(f"aiter.fused_moe ({module.__file__}) has no fused_moe function. {_NOT_AMD}")
    return module


def detect_destination_mode(module: Any, package: Any = None) -> tuple[str, str]:
    """``(mode, reason)``: how ``module.fused_moe`` can write into a caller's buffer (see module docstring)."""
    fn = module.fused_moe
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a C extension without a signature: cannot prove support
        params = {}
    output = params.get("output")
    # A bare **kwargs would swallow output= and ignore it: only a named parameter counts.
    if output is not None and output.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return "output-kwarg", "aiter.fused_moe.fused_moe has an output= parameter (ROCm/aiter #4617)"
    for owner, where in ((module, "aiter.fused_moe"), (package, "aiter")):
        override = getattr(owner, "output_buffer_override", None) if owner is not None else None
        if callable(override):
            return "override-context", f"{where}.output_buffer_override(buf) context manager (AITER da318d0)"
    return (
        "copy-fallback",
        "installed AITER's fused_moe has no output= parameter and no output_buffer_override: "
        "its freshly allocated result is copied (one M x K copy per MoE layer)",
    )


class AiterExperts:
    """``ExpertsBackend`` over AMD AITER's ``fused_moe`` (bf16/fp16, no quantisation, SiLU)."""

    name = "aiter"

    def __init__(self, module: Any = None, package: Any = None) -> None:
        """``module`` is ``aiter.fused_moe`` (imported when None); tests pass a stand-in object."""
        if module is None:
            module = import_aiter_fused_moe()
            package = importlib.import_module("aiter")
        self._module = module
        self.destination_mode, self.destination_reason = detect_destination_mode(module, package)
        owner = module if callable(getattr(module, "output_buffer_override", None)) else package
        self._override = getattr(owner, "output_buffer_override", None)
        self._mask_for: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None

    @property
    def supports_destination(self) -> bool:
        """True when the installed AITER can write into a caller's buffer."""
        return self.destination_mode != "copy-fallback"

    def notes(self) -> list[str]:
        """Lines for a trace's ``meta.notes``."""
        return [f"moe aiter destination mode: {self.destination_mode} ({self.destination_reason})"]

    def _expert_mask(self, expert_map: torch.Tensor) -> torch.Tensor:
        # AITER wants a 0/1 int32 mask over global experts (ids stay global); built once per map.
        mask = self._mask
        if mask is None or self._mask_for is not expert_map:
            mask = (expert_map >= 0).to(torch.int32)
            self._mask, self._mask_for = mask, expert_map
        return mask

    def apply(
        self,
        x: torch.Tensor,
        w13: torch.Tensor,
        w2: torch.Tensor,
        topk_weights: torch.Tensor,
        topk_ids: torch.Tensor,
        *,
        expert_map: torch.Tensor | None = None,
        output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """AITER's result: ``output`` itself when a destination was given and AITER honoured it."""
        kwargs: dict[str, Any] = {}
        if expert_map is not None:
            kwargs["expert_mask"] = self._expert_mask(expert_map)
        # AITER's sorting kernel takes int32 ids (vLLM's router emits int32; torch.topk gives int64).
        ids = topk_ids if topk_ids.dtype == torch.int32 else topk_ids.to(torch.int32)
        args = (x, w13, w2, topk_weights, ids)
        if output is None or self.destination_mode == "copy-fallback":
            return self._module.fused_moe(*args, **kwargs)
        if self.destination_mode == "output-kwarg":
            return self._module.fused_moe(*args, output=output, **kwargs)
        # Thread-local and scoped to this one call: it cannot leak to another thread or a later call.
        with self._override(output):
            return self._module.fused_moe(*args, **kwargs)
