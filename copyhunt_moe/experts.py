"""The experts-backend interface every implementation (reference, Triton, grouped_mm, AITER) follows."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ExpertsBackend(Protocol):
    """Computes the experts' weighted sum for routed tokens (see ``reference.py`` for the math).

    ``supports_destination`` says whether ``apply`` honours ``output=``: when True and ``output`` is
    given, the final top-k reduction is written straight into ``output`` (fully overwritten; no zeroing
    needed) and ``output`` itself is returned. A library-style backend (``supports_destination`` False)
    ignores ``output`` and returns a freshly allocated tensor, which the caller must copy.
    """

    name: str
    supports_destination: bool

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
        """Return ``sum_j w_j * expert_j(x)``; into ``output`` when given and supported."""
        ...
