"""MoE shape presets: MiniMax M2.5 per tensor/expert-parallel rank, and a CPU-sized ``tiny``.

MiniMax M2.5: hidden 3072, MoE intermediate 1536 per expert, 256 experts, top-8, sigmoid scoring with
``e_score_correction_bias``, renormalised top-k weights, 62 MoE layers. Per rank:
TP4 -> N = 1536/4 = 384, TP8 -> N = 192; EP8 -> 256/8 = 32 whole experts (N = 1536) per rank, tokens
routed to other ranks' experts skipped (``expert_map`` = -1 there).
"""

from __future__ import annotations

from dataclasses import dataclass

from copyhunt_moe.errors import MoEConfigError, UnknownPresetError
from copyhunt_moe.routing import SCORINGS


@dataclass(frozen=True)
class MoEPreset:
    """Shapes and routing of one MoE layer as seen by one rank."""

    name: str
    num_experts: int  # global experts the router scores
    hidden: int  # K
    intermediate: int  # N per rank (w13 is [E_local, 2N, K], w2 is [E_local, K, N])
    top_k: int
    scoring: str = "sigmoid"
    routing_bias: bool = True  # e_score_correction_bias (selection only)
    renormalize: bool = True
    ep_size: int = 1  # expert-parallel ranks; this rank owns experts [rank*E/ep, (rank+1)*E/ep)
    ep_rank: int = 0
    model_layers: int = 1  # MoE layers in the real model (MiniMax M2.5: 62)

    def __post_init__(self) -> None:
        for field_name in ("num_experts", "hidden", "intermediate", "top_k", "ep_size", "model_layers"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value < 1:
                raise MoEConfigError(f"preset {self.name!r}: {field_name} must be a positive int, got {value!r}")
        if self.top_k > self.num_experts:
            raise MoEConfigError(f"preset {self.name!r}: top_k {self.top_k} > num_experts {self.num_experts}")
        if self.scoring not in SCORINGS:
            raise MoEConfigError(f"preset {self.name!r}: scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if self.num_experts % self.ep_size:
            raise MoEConfigError(
                f"preset {self.name!r}: num_experts {self.num_experts} not divisible by ep_size {self.ep_size}"
            )
        if not 0 <= self.ep_rank < self.ep_size:
            raise MoEConfigError(f"preset {self.name!r}: ep_rank must be in 0..{self.ep_size - 1}, got {self.ep_rank}")

    @property
    def local_experts(self) -> int:
        """Experts whose weights live on this rank."""
        return self.num_experts // self.ep_size

    @property
    def first_local_expert(self) -> int:
        """Global id of this rank's first expert."""
        return self.ep_rank * self.local_experts

    def output_bytes(self, tokens: int, itemsize: int = 2) -> int:
        """Bytes of one MoE output (tokens x hidden): what each of the two baseline copies moves."""
        return tokens * self.hidden * itemsize

    def weight_bytes(self, itemsize: int = 2) -> int:
        """Bytes of one layer's expert weights on this rank (w13 + w2)."""
        return self.local_experts * 3 * self.intermediate * self.hidden * itemsize


_MINIMAX = dict(num_experts=256, hidden=3072, top_k=8, scoring="sigmoid", routing_bias=True, model_layers=62)

PRESETS: dict[str, MoEPreset] = {
    p.name: p
    for p in (
        MoEPreset(name="minimax-m2.5-tp4", intermediate=1536 // 4, **_MINIMAX),
        MoEPreset(name="minimax-m2.5-tp8", intermediate=1536 // 8, **_MINIMAX),
        MoEPreset(name="minimax-m2.5-ep8", intermediate=1536, ep_size=8, ep_rank=0, **_MINIMAX),
        # CPU-sized, same routing rules: 8 experts, top-2, hidden 64, N 32.
        MoEPreset(name="tiny", num_experts=8, hidden=64, intermediate=32, top_k=2, model_layers=4),
    )
}


def get_preset(name: str) -> MoEPreset:
    """The preset called ``name``; raises ``UnknownPresetError`` naming the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(f"unknown MoE preset {name!r}; valid: {', '.join(PRESETS)}") from None
