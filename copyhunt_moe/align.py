"""Token-to-expert alignment on the GPU: pairs sorted by local expert, each expert padded to BLOCK_M.

Two Triton launches, no host synchronisation, buffer and grid sizes depend on shapes only (so a CUDA
graph captures it). Triton is imported lazily by the caller (``triton_experts``), never at
``import copyhunt_moe``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Pairs per program of the two align kernels. 256 keeps every lane of a 4-warp program busy in the
# histogram; 2048 caps the per-program cursor-table scan at 64 chunks for 16384 tokens x top-8.
_MIN_CHUNK = 256
_MAX_CHUNK = 2048  # numel <= 2048 (M <= 256 at top-8): one chunk, one launch
_BLOCKS_PER_ITER = 16
# Enough programs that each fills at most ~one iteration of blocks (the per-block work was the
# single-program bottleneck: 21-37 us at M=64-256 on an H200 with one program).
_MAX_PROGRAMS = 128


def _next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << (max(1, n) - 1).bit_length()


@dataclass(frozen=True)
class Alignment:
    """The expert-sorted, BLOCK_M-padded order of the (token, slot) pairs; all tensors on the GPU.

    ``sorted_ids[i]`` is a pair index ``m * top_k + j`` or the sentinel ``numel`` in padding slots;
    ``expert_ids[b]`` is the local expert of block ``b``; ``num_padded[0]`` the padded pair count
    (device memory, never read on the host); ``max_blocks`` the worst-case block count (host int, from
    shapes only) that sizes the buffers and the GEMM grids.
    """

    sorted_ids: torch.Tensor
    expert_ids: torch.Tensor
    num_padded: torch.Tensor
    max_blocks: int
    block_m: int
    numel: int
    top_k: int


def max_padded_blocks(numel: int, num_experts: int, block_m: int) -> int:
    """Worst case number of BLOCK_M blocks: every expert that can get a pair wastes up to BLOCK_M - 1 slots."""
    busy = min(numel, num_experts)
    return -(-(numel + busy * (block_m - 1)) // block_m)


def align_block_size(
    topk_ids: torch.Tensor,
    num_experts: int,
    block_m: int,
    expert_map: torch.Tensor | None = None,
    *,
    pdl: bool = False,
    blocks_per_iter: int = _BLOCKS_PER_ITER,
) -> Alignment:
    """Sort the pairs of ``topk_ids`` [M, top_k] by local expert, padded per expert to ``block_m``.

    Pairs whose expert maps to -1 in ``expert_map`` (another rank's) are left out entirely.
    One launch when every pair fits one chunk (decode), two otherwise. ``pdl``: launch with
    programmatic dependent launch (the caller checked the GPU supports it).
    """
    from copyhunt_moe import _triton_kernels as kern

    M, top_k = topk_ids.shape
    numel = M * top_k
    device = topk_ids.device
    max_blocks = max_padded_blocks(numel, num_experts, block_m)
    chunk = min(_MAX_CHUNK, max(_MIN_CHUNK, _next_pow2(numel)))
    num_chunks = max(1, -(-numel // chunk))
    e_pad = max(32, _next_pow2(num_experts))  # the histogram owns >= one bin per lane of a warp
    single = num_chunks == 1
    programs = max(num_chunks, min(_MAX_PROGRAMS, -(-max_blocks // blocks_per_iter)))
    sub = -(-numel // programs)  # SINGLE: pairs each program scatters
    table = torch.empty(num_chunks, e_pad, dtype=torch.int32, device=device)
    cursor = torch.empty(programs, e_pad, dtype=torch.int32, device=device)
    sorted_ids = torch.empty(max_blocks * block_m, dtype=torch.int32, device=device)
    expert_ids = torch.empty(max_blocks, dtype=torch.int32, device=device)
    num_padded = torch.empty(1, dtype=torch.int32, device=device)
    has_map = expert_map is not None
    map_arg = expert_map if has_map else topk_ids  # never read when HAS_MAP is False
    common = (numel, top_k, topk_ids.stride(0), topk_ids.stride(1), num_experts)
    pdl_kw = {"USE_PDL": True, "launch_pdl": True} if pdl else {}
    if not single:
        kern._align_count_kernel[(num_chunks,)](
            topk_ids, map_arg, table, *common, HAS_MAP=has_map, CHUNK=chunk, E_PAD=e_pad, num_warps=4, **pdl_kw
        )
    kern._align_scatter_kernel[(programs,)](
        topk_ids, map_arg, table, cursor, sorted_ids, expert_ids, num_padded,
        *common, num_chunks, max_blocks, sub,
        HAS_MAP=has_map, CHUNK=chunk, E_PAD=e_pad, BLOCK_M=block_m,
        BLOCKS_PER_ITER=blocks_per_iter, SINGLE=single, num_warps=4, **pdl_kw,
    )
    return Alignment(sorted_ids, expert_ids, num_padded, max_blocks, block_m, numel, top_k)
