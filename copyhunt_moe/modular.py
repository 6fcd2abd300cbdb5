"""The modular MoE kernel, modelled on vLLM 0.19.0's ``FusedMoEKernelModularImpl``.

``ModularMoE.apply`` = allocate the persistent result -> carve ``fused_out`` -> experts -> finalize.

``baseline`` (vLLM 0.19.0 as shipped):
    output = torch.empty_like(x); fused_out = a view of the ONE workspace shared by all MoE layers;
    a library-style experts wrapper (like ``AiterExperts``) gets a fresh result from the backend and
    copies it into ``fused_out`` (copy #1, ``LibraryStyleExperts.apply``); the no-op finalize
    (``TopKWeightAndReduceNoOP``) copies ``fused_out`` into ``output`` (copy #2, ``FinalizeNoOp.apply``).
``fixed`` (the safe fix, vLLM #41713 and follow-ups):
    when ``output`` has the expected shape, dtype and device, is contiguous and does not overlap the
    input, it becomes ``fused_out`` ("output alias"); a destination-passing backend writes its final
    reduction straight into it; finalize sees ``fused_out is output`` and skips. Otherwise (or with a
    backend that cannot take a destination) the copying path runs, correctly. A backend that claims
    destination passing but returns another tensor is detected by identity and its result copied
    (vLLM #50338's lesson). Never ``.data =`` swaps, ``set_`` or returning workspace views.

Each copy sits on its own line marked ``# copy-site: NAME``; ``copy_sites()`` finds them so the
tracer's tests need no hard-coded line numbers.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import record_function

from copyhunt_moe.errors import MoEConfigError
from copyhunt_moe.experts import ExpertsBackend
from copyhunt_moe.workspace import WorkspaceManager

MODES = ("baseline", "fixed")


class LibraryStyleExperts:
    """Experts wrapper for a backend that returns a fresh tensor: copies it into ``fused_out``."""

    def __init__(self, backend: ExpertsBackend) -> None:
        self.backend = backend

    def apply(self, fused_out: torch.Tensor, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              expert_map: torch.Tensor | None) -> int:
        """Run the backend, copy its result into ``fused_out``; return the number of copies made (1)."""
        with record_function("moe.experts.library"):
            result = self.backend.apply(x, w13, w2, topk_weights, topk_ids, expert_map=expert_map)
            fused_out.copy_(result)  # copy-site: experts-copy (copy #1)
        return 1


class DestinationExperts:
    """Experts wrapper for a destination-passing backend: the backend writes into ``fused_out``."""

    def __init__(self, backend: ExpertsBackend) -> None:
        self.backend = backend
        self.ignored_destination = 0  # results that came back in another tensor (detected, then copied)

    def apply(self, fused_out: torch.Tensor, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              expert_map: torch.Tensor | None) -> int:
        """Run the backend into ``fused_out``; copy only if it ignored the destination; return copies."""
        with record_function("moe.experts.destination"):
            result = self.backend.apply(
                x, w13, w2, topk_weights, topk_ids, expert_map=expert_map, output=fused_out
            )
            if result is fused_out:
                return 0
            # The backend wrote somewhere else (vLLM #50338): trusting fused_out would return garbage.
            self.ignored_destination += 1
            fused_out.copy_(result)  # copy-site: ignored-destination-copy
        return 1


class FinalizeNoOp:
    """``TopKWeightAndReduceNoOP``: the experts already reduced over top-k; move the result to ``output``."""

    def apply(self, output: torch.Tensor, fused_out: torch.Tensor) -> int:
        """Copy ``fused_out`` into ``output`` unless they are the same tensor; return copies made."""
        with record_function("moe.finalize"):
            if fused_out is output:
                return 0
            output.copy_(fused_out)  # copy-site: finalize-copy (copy #2)
        return 1


@dataclass
class MoECallStats:
    """What the last ``ModularMoE.apply`` did (per thread), for tests and trace notes."""

    path: str = ""  # "workspace" or "output-alias"
    reason: str = ""  # why the output alias was not used (empty when it was)
    experts_copies: int = 0
    finalize_copies: int = 0


class ModularMoE:
    """Prepare / experts / finalize around one experts backend and a shared workspace manager."""

    def __init__(self, backend: ExpertsBackend, workspace: WorkspaceManager, *, mode: str = "baseline") -> None:
        if mode not in MODES:
            raise MoEConfigError(f"mode must be one of {MODES}, got {mode!r}")
        self.backend = backend
        self.workspace = workspace
        self.mode = mode
        self.finalize = FinalizeNoOp()
        self._library = LibraryStyleExperts(backend)
        self._destination = DestinationExperts(backend)
        # Imported here, not at the top: the copy lines above are cited by stored traces and must not move.
        from copyhunt import note  # the profiler's public hook: a no-op outside a hunt
        from copyhunt_moe.backends import backend_notes

        self._notes = tuple(backend_notes(backend))  # what a trace of this layer should say about it
        self._note = note
        self._last = threading.local()  # per-thread: a stats object shared across threads would race

    @property
    def last_call(self) -> MoECallStats:
        """Stats of this thread's last ``apply``."""
        return getattr(self._last, "stats", MoECallStats())

    @property
    def ignored_destination(self) -> int:
        """How many calls the backend returned a tensor other than the destination it was given."""
        return self._destination.ignored_destination

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
        """Return the MoE result in ``output`` (allocated with ``empty_like(x)`` when not given)."""
        if x.dim() != 2:
            raise MoEConfigError(f"x must be [tokens, hidden], got shape {tuple(x.shape)}")
        if output is not None and tuple(output.shape) != tuple(x.shape):
            raise MoEConfigError(f"output must have the input's shape {tuple(x.shape)}, got {tuple(output.shape)}")
        for text in self._notes:
            self._note(text)
        with record_function(f"moe.modular.{self.mode}"):
            if output is None:
                output = torch.empty_like(x)  # the persistent result, fresh every layer (vLLM 0.19)
            stats = MoECallStats()
            fused_out = self._allocate_buffers(x, output, stats)
            if self.mode == "fixed" and self.backend.supports_destination:
                experts = self._destination
            else:
                # baseline; or fixed with a backend that cannot take a destination, where the alias
                # (when allowed) still saves the finalize copy and the fresh result is copied once.
                experts = self._library
            stats.experts_copies = experts.apply(fused_out, x, w13, w2, topk_weights, topk_ids, expert_map)
            stats.finalize_copies = self.finalize.apply(output, fused_out)
            self._last.stats = stats
            return output

    def _allocate_buffers(self, x: torch.Tensor, output: torch.Tensor, stats: MoECallStats) -> torch.Tensor:
        """``fused_out``: the caller's ``output`` when it may be aliased (fixed), else a workspace view."""
        if self.mode == "fixed":
            reason = alias_refusal(x, output)
            if not reason:
                stats.path = "output-alias"
                return output
            stats.reason = reason
        stats.path = "workspace"
        M, K = x.shape
        # The ONE shared buffer: flat[:M*K].view(M, K); the next MoE layer overwrites it.
        return self.workspace.get((M, K), x.dtype, x.device)


def alias_refusal(x: torch.Tensor, output: torch.Tensor) -> str:
    """Why ``output`` cannot be the experts' destination ("" when it can)."""
    if tuple(output.shape) != tuple(x.shape):
        return f"output shape {tuple(output.shape)} != input shape {tuple(x.shape)}"
    if output.dtype != x.dtype:
        return f"output dtype {output.dtype} != activation dtype {x.dtype}"
    if output.device != x.device:
        return f"output device {output.device} != input device {x.device}"
    if not output.is_contiguous():
        return "output is not contiguous"
    if output.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        # Writing the result over the activations while the experts still read them would corrupt both.
        return "output shares storage with the input"
    return ""


_SITE_RE = re.compile(r"#\s*copy-site:\s*([a-z0-9-]+)")


@dataclass(frozen=True)
class CopySite:
    """Where one of the modular kernel's copies is issued."""

    name: str
    file: str
    line: int
    function: str  # the code object's name, as a traceback shows it ("apply")
    qualname: str  # with its class ("FinalizeNoOp.apply")


def copy_sites() -> dict[str, CopySite]:
    """The ``# copy-site:`` lines of this module: ``experts-copy``, ``ignored-destination-copy``, ``finalize-copy``."""
    path = Path(__file__).resolve()
    sites: dict[str, CopySite] = {}
    owner = ""
    function = ""
    for lineno, text in enumerate(path.read_text().splitlines(), start=1):
        stripped = text.strip()
        if text.startswith("class "):
            owner = stripped[6:].split("(", 1)[0].split(":", 1)[0]
        elif text.startswith("def "):
            owner, function = "", stripped[4:].split("(", 1)[0]
        elif stripped.startswith("def "):
            function = f"{owner}.{stripped[4:].split('(', 1)[0]}" if owner else stripped[4:].split("(", 1)[0]
        match = _SITE_RE.search(text)
        if match and ".copy_(" in text and not stripped.startswith("#"):
            sites[match.group(1)] = CopySite(
                match.group(1), str(path), lineno, function.rsplit(".", 1)[-1], function
            )
    return sites


__all__ = [
    "CopySite",
    "DestinationExperts",
    "FinalizeNoOp",
    "LibraryStyleExperts",
    "MODES",
    "MoECallStats",
    "ModularMoE",
    "alias_refusal",
    "copy_sites",
]
