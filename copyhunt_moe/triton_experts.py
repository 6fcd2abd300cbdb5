"""Triton MoE experts: align -> GEMM1 + SiLU*up -> GEMM2 x routing weight -> top-k sum into ``output``.

bf16 (or fp16/fp32) activations and weights, fp32 accumulation, the intermediate stored in the
activation dtype (as ``reference.py`` models it). No host synchronisation and no data-dependent grid,
so the whole call can be captured in a CUDA graph. The final reduction writes straight into a
caller-provided ``output`` (destination passing), which it fully overwrites.

Block sizes come from a checked-in per-M table (``configs/E{E}_N{N}_K{K}.json``, tuned on the device
by ``benchmarks/moe_kernels.py``) or a built-in heuristic for shapes without a table.
Triton is imported on first use only, so ``import copyhunt_moe`` never needs it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import torch

from copyhunt_moe.align import Alignment, align_block_size
from copyhunt_moe.errors import MoEConfigError

_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class GemmConfig:
    """Tile shape and launch options of one grouped GEMM (BLOCK_M is shared, see ``MoEConfig``)."""

    block_n: int = 64
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_n", "block_k", "num_warps"):
            value = getattr(self, name)
            if not _is_pow2(value):
                raise MoEConfigError(f"GemmConfig.{name}={value}: must be a power of two")
        if self.block_n < 16 or self.block_k < 16:
            raise MoEConfigError(f"GemmConfig block_n={self.block_n}, block_k={self.block_k}: tl.dot needs >= 16")
        if self.group_m < 1 or self.num_stages < 1:
            raise MoEConfigError(f"GemmConfig group_m={self.group_m}, num_stages={self.num_stages}: must be >= 1")


@dataclass(frozen=True)
class MoEConfig:
    """Block sizes of one Triton experts call: the alignment block plus one ``GemmConfig`` per GEMM."""

    block_m: int = 64
    gemm1: GemmConfig = field(default_factory=GemmConfig)
    gemm2: GemmConfig = field(default_factory=GemmConfig)
    reduce_block: int = 1024
    # Programmatic dependent launch between the 4-5 launches (Hopper+, CUDA only): hides launch gaps
    # where they dominate (decode); ignored where unsupported.
    pdl: bool = False
    # GEMM1 as one MMA over interleaved gate/up columns (2 x block_n wide) instead of two.
    gate_up_one_dot: bool = False
    # Decode path: no alignment and no separate top-k sum (2 launches instead of 3-4); GEMM1 per pair,
    # GEMM2 per token over all its experts straight into the destination. For a handful of tokens.
    direct: bool = False
    # Direct path only: GEMM1 split over K into this many fp32 parts (GEMM2 adds them); 1 = no split.
    # Used only when K is a multiple of split_k * gemm1.block_k, else 1.
    split_k: int = 1
    # Direct path with PDL: GEMM2 loads the routing and its first weight tile before waiting for GEMM1.
    prefetch: bool = False

    def __post_init__(self) -> None:
        if not _is_pow2(self.block_m) or self.block_m < 16:
            raise MoEConfigError(f"MoEConfig.block_m={self.block_m}: must be a power of two >= 16")
        if self.split_k < 1:
            raise MoEConfigError(f"MoEConfig.split_k={self.split_k}: must be >= 1")
        if not _is_pow2(self.reduce_block):
            raise MoEConfigError(f"MoEConfig.reduce_block={self.reduce_block}: must be a power of two")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in the config tables."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoEConfig:
        """Inverse of ``to_dict`` (validates every field)."""
        return cls(
            block_m=int(d["block_m"]),
            gemm1=GemmConfig(**d["gemm1"]),
            gemm2=GemmConfig(**d["gemm2"]),
            reduce_block=int(d.get("reduce_block", 1024)),
            pdl=bool(d.get("pdl", False)),
            gate_up_one_dot=bool(d.get("gate_up_one_dot", False)),
            direct=bool(d.get("direct", False)),
            split_k=int(d.get("split_k", 1)),
            prefetch=bool(d.get("prefetch", False)),
        )


def default_config(M: int, top_k: int) -> MoEConfig:
    """Heuristic for shapes with no tuned table: small tiles for decode, larger for prefill."""
    rows_per_expert_guess = M * top_k
    if M <= 32:
        return MoEConfig(16, GemmConfig(32, 128, 1, 4, 4), GemmConfig(64, 128, 1, 4, 3))
    if rows_per_expert_guess <= 4096:
        return MoEConfig(32, GemmConfig(64, 64, 4, 4, 4), GemmConfig(64, 64, 4, 4, 4))
    return MoEConfig(64, GemmConfig(128, 64, 8, 8, 3), GemmConfig(128, 64, 8, 8, 3))


def config_file_name(num_experts: int, n: int, k: int) -> str:
    """Name of the checked-in table for experts count, intermediate size per expert and hidden size."""
    return f"E{num_experts}_N{n}_K{k}.json"


@functools.lru_cache(maxsize=None)
def load_config_table(num_experts: int, n: int, k: int) -> dict[int, MoEConfig] | None:
    """The tuned per-M table shipped in ``copyhunt_moe/configs/``; None when the shape has none."""
    path = resources.files("copyhunt_moe").joinpath("configs", config_file_name(num_experts, n, k))
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {int(m): MoEConfig.from_dict(c) for m, c in data["configs"].items()}


def pick_config(M: int, num_experts: int, n: int, k: int, top_k: int) -> MoEConfig:
    """The tuned entry whose M is nearest (in log scale) to ``M``, else the heuristic."""
    table = load_config_table(num_experts, n, k)
    if not table:
        return default_config(M, top_k)
    # Nearest in log2 distance: 1 vs 8 vs 64 are equally "far apart" decode buckets.
    best = min(table, key=lambda m: (abs((max(M, 1)).bit_length() - m.bit_length()), m))
    return table[best]


def _check_inputs(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    expert_map: torch.Tensor | None,
    output: torch.Tensor | None,
) -> None:
    """Raise MoEConfigError naming the first bad argument (shapes, dtypes, devices, unit inner strides)."""
    if x.dim() != 2 or w13.dim() != 3 or w2.dim() != 3:
        raise MoEConfigError(f"x must be [M, K], w13 [E, 2N, K], w2 [E, K, N]; got {tuple(x.shape)}, "
                         f"{tuple(w13.shape)}, {tuple(w2.shape)}")
    M, K = x.shape
    E, two_n, k13 = w13.shape
    if two_n % 2 or k13 != K or tuple(w2.shape) != (E, K, two_n // 2):
        raise MoEConfigError(f"w13 {tuple(w13.shape)} / w2 {tuple(w2.shape)} do not match x [M={M}, K={K}]")
    if x.dtype not in _FLOAT_DTYPES or w13.dtype != x.dtype or w2.dtype != x.dtype:
        raise MoEConfigError(f"x, w13, w2 must share one of {_FLOAT_DTYPES}; got {x.dtype}, {w13.dtype}, {w2.dtype}")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != M or tuple(topk_weights.shape) != tuple(topk_ids.shape):
        raise MoEConfigError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} "
                         f"must both be [M={M}, top_k]")
    if topk_ids.dtype not in (torch.int32, torch.int64):
        raise MoEConfigError(f"topk_ids must be int32 or int64, got {topk_ids.dtype}")
    # The kernels step along K and N with unit stride; gather/scatter strides are passed explicitly.
    if w13.stride(2) != 1 or w2.stride(2) != 1:
        raise MoEConfigError("w13 and w2 must have a contiguous last dimension")
    tensors = [x, w13, w2, topk_weights, topk_ids]
    if expert_map is not None:
        if expert_map.dim() != 1 or expert_map.dtype not in (torch.int32, torch.int64):
            raise MoEConfigError(f"expert_map must be a 1-D int32/int64 tensor, got {expert_map.dtype} "
                             f"{tuple(expert_map.shape)}")
        if not expert_map.is_contiguous():
            raise MoEConfigError("expert_map must be contiguous")
        tensors.append(expert_map)
    if output is not None:
        if tuple(output.shape) != (M, K) or output.dtype != x.dtype:
            raise MoEConfigError(f"output must be [{M}, {K}] {x.dtype}; got {tuple(output.shape)} {output.dtype}")
        tensors.append(output)
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise MoEConfigError(f"all tensors must be on one device; got {sorted(str(d) for d in devices)}")


@functools.lru_cache(maxsize=None)
def _pdl_capable(device: torch.device) -> bool:
    """Programmatic dependent launch needs an NVIDIA GPU of compute capability >= 9 (host-side query)."""
    if device.type != "cuda" or getattr(torch.version, "hip", None):
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def pdl_options(pdl: bool) -> dict[str, bool]:
    """Launch keywords for one kernel: the PDL constexpr and launch attribute, or nothing."""
    return {"USE_PDL": True, "launch_pdl": True} if pdl else {}


def run_gemm1(
    x: torch.Tensor, w13: torch.Tensor, al: Alignment, g: GemmConfig, pdl: bool = False, one_dot: bool = False
) -> torch.Tensor:
    """act [max_blocks * BLOCK_M, N] = silu(x @ gate.T) * (x @ up.T), rows in aligned order."""
    from copyhunt_moe import _triton_kernels as kern

    K = x.shape[1]
    N = w13.shape[1] // 2
    bm = al.block_m
    act = torch.empty(al.max_blocks * bm, N, dtype=x.dtype, device=x.device)
    grid = (al.max_blocks * -(-N // g.block_n),)
    kern._gemm1_silu_kernel[grid](
        x, w13, act, al.sorted_ids, al.expert_ids, al.num_padded,
        al.numel, N, K, al.top_k, al.max_blocks,
        x.stride(0), x.stride(1), w13.stride(0), w13.stride(1), w13.stride(2), act.stride(0),
        BLOCK_M=bm, BLOCK_N=g.block_n, BLOCK_K=g.block_k, GROUP_M=g.group_m,
        EVEN_K=K % g.block_k == 0, num_warps=g.num_warps, num_stages=g.num_stages, ONE_DOT=one_dot,
        **pdl_options(pdl),
    )
    return act


def run_gemm2(
    act: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor, al: Alignment, g: GemmConfig, pdl: bool = False
) -> torch.Tensor:
    """y [M * top_k, K] = routing weight x act @ w2[e].T, rows by pair index (other ranks' rows unwritten)."""
    from copyhunt_moe import _triton_kernels as kern

    _, K, N = w2.shape
    y = torch.empty(al.numel, K, dtype=act.dtype, device=act.device)
    grid = (al.max_blocks * -(-K // g.block_n),)
    kern._gemm2_kernel[grid](
        act, w2, y, al.sorted_ids, al.expert_ids, al.num_padded, topk_weights,
        al.numel, N, K, al.top_k, al.max_blocks,
        act.stride(0), w2.stride(0), w2.stride(1), w2.stride(2), y.stride(0),
        topk_weights.stride(0), topk_weights.stride(1),
        BLOCK_M=al.block_m, BLOCK_N=g.block_n, BLOCK_K=g.block_k, GROUP_M=g.group_m,
        EVEN_K=N % g.block_k == 0, num_warps=g.num_warps, num_stages=g.num_stages, **pdl_options(pdl),
    )
    return y


def run_topk_sum(
    y: torch.Tensor, out: torch.Tensor, topk_ids: torch.Tensor, expert_map: torch.Tensor | None,
    num_experts: int, block: int = 1024, pdl: bool = False,
) -> torch.Tensor:
    """out[m] = sum_j y[m * top_k + j] (fp32, fixed order; other ranks' pairs add 0); fully overwrites ``out``."""
    from copyhunt_moe import _triton_kernels as kern

    M, K = out.shape
    top_k = topk_ids.shape[1]
    has_map = expert_map is not None
    rb = min(block, max(16, 1 << (K - 1).bit_length()))
    kern._topk_sum_kernel[(M, -(-K // rb))](
        y, out, topk_ids, expert_map if has_map else topk_ids,
        K, top_k, num_experts, y.stride(0), out.stride(0), out.stride(1), topk_ids.stride(0), topk_ids.stride(1),
        HAS_MAP=has_map, BLOCK_K=rb, num_warps=4, **pdl_options(pdl),
    )
    return out


def run_direct(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
    expert_map: torch.Tensor | None, out: torch.Tensor, cfg: MoEConfig, pdl: bool = False,
) -> torch.Tensor:
    """The decode path (``MoEConfig.direct``): GEMM1 per (pair, n tile), GEMM2 + top-k sum per token."""
    from copyhunt_moe import _triton_kernels as kern

    M, K = x.shape
    E, two_n, _ = w13.shape
    N = two_n // 2
    top_k = topk_ids.shape[1]
    numel = M * top_k
    g1, g2 = cfg.gemm1, cfg.gemm2
    has_map = expert_map is not None
    map_arg = expert_map if has_map else topk_ids  # never read when HAS_MAP is False
    split = cfg.split_k if K % (cfg.split_k * g1.block_k) == 0 else 1
    if split > 1:  # fp32 parts [split, numel, 2N]: gate sums, then up sums
        act = torch.empty(split * numel, 2 * N, dtype=torch.float32, device=x.device)
    else:
        act = torch.empty(numel, N, dtype=x.dtype, device=x.device)
    kern._gemm1_direct_kernel[(numel * -(-N // g1.block_n) * split,)](
        x, w13, act, topk_ids, map_arg,
        numel, N, K, top_k, E,
        x.stride(0), x.stride(1), w13.stride(0), w13.stride(1), w13.stride(2), act.stride(0),
        topk_ids.stride(0), topk_ids.stride(1),
        HAS_MAP=has_map, BLOCK_M=cfg.block_m, BLOCK_N=g1.block_n, BLOCK_K=g1.block_k, GROUP_M=g1.group_m,
        EVEN_K=K % g1.block_k == 0, num_warps=g1.num_warps, num_stages=g1.num_stages, ONE_DOT=cfg.gate_up_one_dot,
        SPLIT_K=split, **pdl_options(pdl),
    )
    kern._gemm2_direct_kernel[(M, -(-K // g2.block_n))](
        act, w2, out, topk_ids, map_arg, topk_weights,
        N, K, E,
        act.stride(0), w2.stride(0), w2.stride(1), w2.stride(2), out.stride(0), out.stride(1),
        topk_ids.stride(0), topk_ids.stride(1), topk_weights.stride(0), topk_weights.stride(1),
        TOP_K=top_k, TOP_K_PAD=max(2, 1 << (top_k - 1).bit_length()), HAS_MAP=has_map,
        BLOCK_N=g2.block_n, BLOCK_K=g2.block_k, num_warps=g2.num_warps, num_stages=g2.num_stages,
        SPLIT_K=split, PREFETCH=cfg.prefetch and pdl, **pdl_options(pdl),
    )
    return out


def triton_moe_experts(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    expert_map: torch.Tensor | None = None,
    output: torch.Tensor | None = None,
    config: MoEConfig | None = None,
) -> torch.Tensor:
    """``sum_j topk_weights[:, j] * expert_{topk_ids[:, j]}(x)`` by the Triton kernels; written into
    ``output`` (fully overwritten, returned) when given, else into a new tensor."""
    _check_inputs(x, w13, w2, topk_weights, topk_ids, expert_map, output)

    M, K = x.shape
    E, two_n, _ = w13.shape
    top_k = topk_ids.shape[1]
    out = output if output is not None else torch.empty(M, K, dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    cfg = config or pick_config(M, E, two_n // 2, K, top_k)
    pdl = cfg.pdl and _pdl_capable(x.device)
    if cfg.direct:
        return run_direct(x, w13, w2, topk_weights, topk_ids, expert_map, out, cfg, pdl)
    al = align_block_size(topk_ids, E, cfg.block_m, expert_map, pdl=pdl)
    act = run_gemm1(x, w13, al, cfg.gemm1, pdl, cfg.gate_up_one_dot)
    y = run_gemm2(act, w2, topk_weights, al, cfg.gemm2, pdl)
    return run_topk_sum(y, out, topk_ids, expert_map, E, cfg.reduce_block, pdl)


class TritonExperts:
    """``ExpertsBackend`` running the Triton kernels; honours ``output=`` (destination passing)."""

    name: str = "triton"
    supports_destination: bool = True

    def __init__(self, config: MoEConfig | None = None) -> None:
        """``config`` pins one block-size set for every M (tests, tuning); None uses the tuned table."""
        self.config = config

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
        return triton_moe_experts(
            x, w13, w2, topk_weights, topk_ids, expert_map=expert_map, output=output, config=self.config
        )
