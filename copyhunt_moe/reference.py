"""Pure-torch reference of the MoE experts computation (runs anywhere; float32 accumulation).

Layouts follow vLLM's fused MoE:
    x            [M, K]        activations (bf16 on GPU, any float dtype here)
    w13          [E, 2N, K]    gate (rows 0..N-1) and up (rows N..2N-1) projections per expert
    w2           [E, K, N]     down projection per expert
    topk_weights [M, top_k]    routing weights (float32)
    topk_ids     [M, top_k]    global expert ids (int32 or int64)
    expert_map   [E_global]    optional: global id -> local expert index, -1 for experts of other
                               ranks (expert parallelism); such (token, expert) pairs contribute 0.

    out[m] = sum_j topk_weights[m, j] * w2[e] @ (silu(w13[e, :N] @ x[m]) * (w13[e, N:] @ x[m])),
             e = local(topk_ids[m, j])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_experts(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    expert_map: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The experts' weighted sum, one expert at a time in float32; writes into ``out`` if given."""
    M, K = x.shape
    num_local, two_n, _ = w13.shape
    n = two_n // 2
    ids = topk_ids.long()
    if expert_map is not None:
        ids = expert_map.long()[ids]  # -1 for experts owned by other ranks
    acc = torch.zeros(M, K, dtype=torch.float32, device=x.device)
    xf = x.float()
    for e in range(num_local):
        token_idx, slot = torch.nonzero(ids == e, as_tuple=True)
        if token_idx.numel() == 0:
            continue
        h = xf[token_idx] @ w13[e].float().t()  # [T, 2N]
        act = F.silu(h[:, :n]) * h[:, n:]
        # Round the intermediate to the activation dtype, as the fused kernels store it.
        act = act.to(x.dtype).float()
        y = act @ w2[e].float().t()  # [T, K]
        y = y * topk_weights[token_idx, slot].float().unsqueeze(1)
        acc.index_add_(0, token_idx, y)
    if out is None:
        return acc.to(x.dtype)
    out.copy_(acc)
    return out
