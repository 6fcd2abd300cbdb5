"""MoE experts through ``torch._grouped_mm``: sort pairs by expert, two grouped GEMMs, top-k sum.

Pure torch ops with no host synchronisation (no ``.item()``, ``nonzero`` or ``bincount``), so it
captures in a CUDA graph. ``torch._grouped_mm`` runs bf16 on Hopper GPUs (CUTLASS) and has a slow
fallback elsewhere (the CPU included), so the same code is testable on the CPU in float32.
The final top-k sum writes into ``output`` when given (destination passing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grouped_mm_experts(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    expert_map: torch.Tensor | None = None,
    output: torch.Tensor | None = None,
) -> torch.Tensor:
    """The experts' weighted sum via ``torch._grouped_mm``; into ``output`` (fully overwritten) if given."""
    M, K = x.shape
    E, two_n, _ = w13.shape
    n = two_n // 2
    top_k = topk_ids.shape[1]
    if output is not None and (tuple(output.shape) != (M, K) or output.dtype != x.dtype):
        raise ValueError(f"output must be [{M}, {K}] {x.dtype}; got {tuple(output.shape)} {output.dtype}")
    if M == 0:
        return output if output is not None else x.new_empty(M, K)
    local = topk_ids.reshape(-1).long()
    if expert_map is not None:
        local = expert_map.long()[local]  # -1: another rank's expert, not computed here
    valid = local >= 0
    # Pairs of other ranks sort last (key E) and fall outside every group's offset range.
    key = torch.where(valid, local, E)
    order = torch.argsort(key, stable=True)
    counts = torch.zeros(E + 1, dtype=torch.int64, device=x.device)
    counts.scatter_add_(0, key, torch.ones_like(key))
    offs = counts[:E].cumsum(0).to(torch.int32)
    xs = x[order // top_k]
    h = torch._grouped_mm(xs, w13.transpose(1, 2), offs=offs)  # [numel, 2N]
    # SiLU in fp32, intermediate rounded to the activation dtype (as reference.py and the kernels do).
    act = (F.silu(h[:, :n].float()) * h[:, n:].float()).to(x.dtype)
    y = torch._grouped_mm(act, w2.transpose(1, 2), offs=offs)  # [numel, K]
    w = topk_weights.reshape(-1)[order].to(y.dtype)
    keep = valid[order].unsqueeze(1)
    # Rows past the last offset are never written by _grouped_mm: `where` drops them, NaN or not.
    y = torch.where(keep, y * w.unsqueeze(1), torch.zeros((), dtype=y.dtype, device=y.device))
    unsorted = torch.empty_like(y)
    unsorted[order] = y  # `order` is a permutation: one writer per row, deterministic
    return torch.sum(unsorted.view(M, top_k, K), dim=1, out=output)


class GroupedMMExperts:
    """``ExpertsBackend`` on ``torch._grouped_mm`` (bf16 on Hopper); honours ``output=``."""

    name: str = "grouped_mm"
    supports_destination: bool = True

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
        return grouped_mm_experts(
            x, w13, w2, topk_weights, topk_ids, expert_map=expert_map, output=output
        )
