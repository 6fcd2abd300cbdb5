"""Pure-torch experts backends: a copy-free dense one for demos, the reference, and a library stand-in.

- ``TorchExperts`` ("torch"): every local expert on every token (dense; fine for the ``tiny`` preset and
  small decode batches), weighted and summed over experts in float32 straight into the destination.
  It issues no copy op of its own (no ``.float()``, no ``.contiguous()``), so a trace of the demo
  shows only the modular kernel's copies. Destination passing: yes.
- ``ReferenceExperts`` ("reference"): ``reference.reference_experts`` behind the backend interface;
  slow and full of dtype conversions (float32 accumulation), the correctness oracle.
- ``LibraryExperts`` ("library"): the ``TorchExperts`` math behind a library-style interface that
  ignores ``output`` and always returns a freshly allocated tensor, like AITER's ``fused_moe``
  before ROCm/aiter #4617. Destination passing: no (the caller must copy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from copyhunt_moe.errors import MoEConfigError
from copyhunt_moe.reference import reference_experts


def check_experts_inputs(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    expert_map: torch.Tensor | None = None,
    output: torch.Tensor | None = None,
) -> tuple[int, int, int, int]:
    """Validate the experts' operands against the layouts of ``reference.py``; return ``(M, K, E, N)``."""
    if x.dim() != 2:
        raise MoEConfigError(f"x must be [tokens, hidden], got shape {tuple(x.shape)}")
    M, K = x.shape
    if w13.dim() != 3 or w13.shape[2] != K or w13.shape[1] % 2:
        raise MoEConfigError(f"w13 must be [E, 2N, {K}], got shape {tuple(w13.shape)}")
    E, two_n, _ = w13.shape
    N = two_n // 2
    if tuple(w2.shape) != (E, K, N):
        raise MoEConfigError(f"w2 must be [{E}, {K}, {N}] to match w13, got shape {tuple(w2.shape)}")
    if w13.dtype != x.dtype or w2.dtype != x.dtype:
        raise MoEConfigError(f"x, w13 and w2 must share a dtype; got {x.dtype}, {w13.dtype}, {w2.dtype}")
    if topk_ids.dtype not in (torch.int32, torch.int64):
        raise MoEConfigError(f"topk_ids must be int32 or int64, got {topk_ids.dtype}")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != M:
        raise MoEConfigError(f"topk_ids must be [{M}, top_k], got shape {tuple(topk_ids.shape)}")
    if tuple(topk_weights.shape) != tuple(topk_ids.shape):
        raise MoEConfigError(
            f"topk_weights shape {tuple(topk_weights.shape)} must equal topk_ids shape {tuple(topk_ids.shape)}"
        )
    if expert_map is not None and expert_map.dim() != 1:
        raise MoEConfigError(f"expert_map must be 1-D [global experts], got shape {tuple(expert_map.shape)}")
    if output is not None and tuple(output.shape) != (M, K):
        raise MoEConfigError(f"output must have shape ({M}, {K}), got {tuple(output.shape)}")
    return M, K, E, N


def dense_experts(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    expert_map: torch.Tensor | None = None,
    output: torch.Tensor | None = None,
) -> torch.Tensor:
    """The experts' weighted sum computed densely over all local experts; written into ``output``."""
    M, K, E, N = check_experts_inputs(x, w13, w2, topk_weights, topk_ids, expert_map, output)
    if output is None:
        output = torch.empty((M, K), dtype=x.dtype, device=x.device)
    # [M, E*2N] in one GEMM; w13 is contiguous [E, 2N, K] so the reshape is a free view.
    h = F.linear(x, w13.view(E * 2 * N, K)).view(M, E, 2 * N)
    act = F.silu(h[..., :N]) * h[..., N:]  # [M, E, N], rounded to the activation dtype like the kernels
    y = torch.bmm(act.transpose(0, 1), w2.transpose(1, 2))  # [E, M, K]; bmm reads strided operands
    ids = topk_ids if expert_map is None else expert_map[topk_ids]
    # Dense routing matrix R[m, e] = sum of the weights token m gives local expert e (0 if not routed).
    # scatter_add_ needs int64 indices: the router emits int64 so this is not a conversion in practice.
    ids = ids if ids.dtype == torch.int64 else ids.long()
    weights = topk_weights
    if expert_map is not None:
        remote = ids < 0  # experts of other ranks contribute nothing (expert parallelism)
        weights = torch.where(remote, 0.0, topk_weights)
        ids = ids.clamp(min=0)
    routing = torch.zeros((M, E), dtype=torch.float32, device=x.device)
    routing.scatter_add_(1, ids, weights)
    weighted = y * routing.t().unsqueeze(-1)  # bf16 * fp32 -> fp32 [E, M, K]
    # The final reduction writes straight into the destination (accumulates in fp32, rounds once).
    torch.sum(weighted, dim=0, out=output)
    return output


class TorchExperts:
    """Copy-free dense pure-torch experts (CPU or GPU); honours ``output=`` (destination passing)."""

    name = "torch"
    supports_destination = True

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
        """Return the experts' weighted sum, written into ``output`` when given."""
        return dense_experts(x, w13, w2, topk_weights, topk_ids, expert_map=expert_map, output=output)


class ReferenceExperts:
    """``reference_experts`` (float32 accumulation, one expert at a time) as a backend; honours ``output=``."""

    name = "reference"
    supports_destination = True

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
        """Return the reference result, written into ``output`` when given."""
        check_experts_inputs(x, w13, w2, topk_weights, topk_ids, expert_map, output)
        return reference_experts(x, w13, w2, topk_weights, topk_ids, expert_map=expert_map, out=output)


class LibraryExperts:
    """A library-style backend: ignores ``output`` and returns a fresh tensor (the caller copies it)."""

    name = "library"
    supports_destination = False

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
        """Return a freshly allocated result; ``output`` is accepted for the interface and ignored."""
        del output  # a library that allocates its own result, as AITER's fused_moe did
        return dense_experts(x, w13, w2, topk_weights, topk_ids, expert_map=expert_map)
