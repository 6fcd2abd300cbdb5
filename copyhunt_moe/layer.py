"""``MoELayer`` (router gate + expert weights + modular kernel) and ``MoEStack`` of L layers.

Weights are seeded random numbers made on the target device in the target dtype (no downloads, and no
``.to()`` copies: the demo traces must show only the MoE output copies). Scales keep bf16 O(1):
gate ~ N(0, 1/K) so logits ~ N(0, 1); w13 ~ N(0, 1/K); w2 ~ N(0, 1/N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from copyhunt_moe.experts import ExpertsBackend
from copyhunt_moe.modular import ModularMoE
from copyhunt_moe.presets import MoEPreset
from copyhunt_moe.routing import route
from copyhunt_moe.workspace import WorkspaceManager


def _randn(shape: tuple[int, ...], std: float, *, generator: torch.Generator, device: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device, dtype=dtype).mul_(std)


def make_expert_map(preset: MoEPreset, device: torch.device | str) -> torch.Tensor | None:
    """Global expert id -> local index on this rank, -1 for other ranks' experts (None without EP)."""
    if preset.ep_size == 1:
        return None
    ids = torch.arange(preset.num_experts, device=device)
    local = ids - preset.first_local_expert
    owned = (local >= 0) & (local < preset.local_experts)
    return torch.where(owned, local, -1)


class MoELayer(nn.Module):
    """One MoE block on one rank: ``forward(x) = experts(x, route(gate(x)))`` via a ``ModularMoE``."""

    def __init__(
        self,
        preset: MoEPreset,
        backend: ExpertsBackend,
        workspace: WorkspaceManager,
        *,
        mode: str = "baseline",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.preset = preset
        device = torch.device(device)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        E, K, N, local = preset.num_experts, preset.hidden, preset.intermediate, preset.local_experts
        kw = dict(generator=gen, device=device, dtype=dtype)
        self.register_buffer("gate_weight", _randn((E, K), K**-0.5, **kw))
        bias = _randn((E,), 0.05, generator=gen, device=device, dtype=torch.float32) if preset.routing_bias else None
        self.register_buffer("e_score_correction_bias", bias)
        self.register_buffer("w13", _randn((local, 2 * N, K), K**-0.5, **kw))
        self.register_buffer("w2", _randn((local, K, N), N**-0.5, **kw))
        self.register_buffer("expert_map", make_expert_map(preset, device))
        self.kernel = ModularMoE(backend, workspace, mode=mode)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(topk_weights, topk_ids)`` for the tokens ``x``."""
        logits = F.linear(x, self.gate_weight)
        return route(
            logits,
            self.preset.top_k,
            scoring=self.preset.scoring,
            bias=self.e_score_correction_bias,
            renormalize=self.preset.renormalize,
        )

    def forward(self, x: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
        """The MoE output for ``x`` ([tokens, hidden]), in ``output`` when given."""
        topk_weights, topk_ids = self.route(x)
        return self.kernel.apply(
            x, self.w13, self.w2, topk_weights, topk_ids, expert_map=self.expert_map, output=output
        )


class MoEStack(nn.Module):
    """L ``MoELayer``s sharing ONE workspace manager; ``forward`` runs one decode step with residuals."""

    def __init__(
        self,
        preset: MoEPreset,
        backend: ExpertsBackend,
        *,
        layers: int,
        mode: str = "baseline",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        seed: int = 0,
        workspace: WorkspaceManager | None = None,
    ) -> None:
        super().__init__()
        self.workspace = workspace if workspace is not None else WorkspaceManager()
        self.layers = nn.ModuleList(
            MoELayer(preset, backend, self.workspace, mode=mode, device=device, dtype=dtype, seed=seed + i)
            for i in range(layers)
        )

    def set_mode(self, mode: str) -> None:
        """Switch every layer's kernel between ``baseline`` and ``fixed`` (same weights)."""
        for layer in self.layers:
            layer.kernel = ModularMoE(layer.kernel.backend, self.workspace, mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + moe_1(x)``, then the next layer on that, ...; returns the last hidden state."""
        for layer in self.layers:
            x = x + layer(x)
        return x
