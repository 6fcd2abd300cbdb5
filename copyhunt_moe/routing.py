"""Top-k routing over router logits (softmax or sigmoid scoring, optional selection bias).

MiniMax M2.5 style: ``scores = sigmoid(logits)``; the experts are *chosen* by ``scores + bias``
(``e_score_correction_bias``) but *weighted* by the unbiased scores, renormalised to sum to 1.

The routing path issues no copy ops (no ``.float()``/``.to()``): the demo's traces must show the
MoE output copies and nothing else, so dtype changes happen inside ops that do real work
(``scores + bias`` promotes to float32; the renormalising division writes float32 through ``out=``).
"""

from __future__ import annotations

import torch

from copyhunt_moe.errors import MoEConfigError

SCORINGS = ("softmax", "sigmoid")


def route(
    logits: torch.Tensor,
    top_k: int,
    *,
    scoring: str = "softmax",
    bias: torch.Tensor | None = None,
    renormalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(topk_weights float32 [M, top_k], topk_ids int64 [M, top_k])`` for ``logits [M, E]``."""
    if logits.dim() != 2:
        raise MoEConfigError(f"router logits must be 2-D [tokens, experts], got shape {tuple(logits.shape)}")
    num_experts = logits.shape[1]
    if not 1 <= top_k <= num_experts:
        raise MoEConfigError(f"top_k must be in 1..{num_experts} (the number of experts), got {top_k}")
    if scoring not in SCORINGS:
        raise MoEConfigError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    if bias is not None and tuple(bias.shape) != (num_experts,):
        raise MoEConfigError(f"routing bias must have shape ({num_experts},), got {tuple(bias.shape)}")

    scores = torch.softmax(logits, dim=-1) if scoring == "softmax" else torch.sigmoid(logits)
    # The bias only changes which experts win, never their weights (DeepSeek-V3 / MiniMax M2).
    choice = scores if bias is None else scores + bias
    _, topk_ids = torch.topk(choice, top_k, dim=-1)
    picked = scores.gather(1, topk_ids)
    if renormalize:
        topk_weights = torch.empty(picked.shape, dtype=torch.float32, device=picked.device)
        torch.div(picked, picked.sum(dim=-1, keepdim=True), out=topk_weights)
    elif picked.dtype == torch.float32:
        topk_weights = picked
    else:
        topk_weights = picked.to(torch.float32)  # a real conversion; no preset takes this path
    return topk_weights, topk_ids
