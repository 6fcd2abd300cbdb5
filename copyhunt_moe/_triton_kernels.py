"""The ``@triton.jit`` bodies of the Triton MoE experts (private; the public API is ``triton_experts.py``).

Pipeline (all on the GPU, no host synchronisation, grid sizes fixed by shapes alone so CUDA graphs
capture it):

1. ``_align_count_kernel``   per chunk of (token, slot) pairs: histogram of local expert ids.
2. ``_align_scatter_kernel`` prefix sums of the padded counts; every pair's position in the
   ``BLOCK_M``-padded, expert-sorted order; the expert id of every block; sentinel-filled padding.
3. ``_gemm1_silu_kernel``    act[pos] = silu(x[tok] @ w13[e, :N].T) * (x[tok] @ w13[e, N:].T).
4. ``_gemm2_kernel``         y[pair] = weight[pair] * act[pos] @ w2[e].T  (rows scattered by pair).
5. ``_topk_sum_kernel``      out[m] = sum_j y[m * top_k + j]  (fully overwrites the destination).

A "pair" is the flat index ``m * top_k + j`` of ``topk_ids[m, j]``; the sentinel pair index is
``numel = M * top_k``, used for padding slots.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def _pdl_prologue(USE_PDL: tl.constexpr):
    """Programmatic dependent launch (Hopper+): this grid may be launched before the previous one
    ends, so wait for it (and, transitively, everything before it) before touching ANY memory, then let
    the next grid launch early too. Only launch latency is hidden; no memory hazard is opened."""
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def _local_expert(
    ids_ptr, map_ptr, offs, numel, top_k, stride_im, stride_ik, num_experts, HAS_MAP: tl.constexpr
):
    """Local expert id of each pair in ``offs`` and whether the pair is computed on this rank."""
    in_range = offs < numel
    tok = offs // top_k
    slot = offs % top_k
    g = tl.load(ids_ptr + tok * stride_im + slot * stride_ik, mask=in_range, other=0).to(tl.int32)
    if HAS_MAP:
        e = tl.load(map_ptr + g, mask=in_range, other=-1).to(tl.int32)
    else:
        e = g
    ok = in_range & (e >= 0) & (e < num_experts)
    # Masked-off lanes get bin 0 so no out-of-range address or bin is ever formed.
    return tl.where(ok, e, 0), ok


@triton.jit(do_not_specialize=["numel"])
def _align_count_kernel(
    ids_ptr, map_ptr, table_ptr,
    numel, top_k, stride_im, stride_ik, num_experts,
    HAS_MAP: tl.constexpr, CHUNK: tl.constexpr, E_PAD: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """table[p, e] = number of pairs of chunk p routed to local expert e."""
    _pdl_prologue(USE_PDL)
    p = tl.program_id(0)
    offs = p * CHUNK + tl.arange(0, CHUNK)
    e, ok = _local_expert(ids_ptr, map_ptr, offs, numel, top_k, stride_im, stride_ik, num_experts, HAS_MAP)
    hist = tl.histogram(e, E_PAD, mask=ok)
    tl.store(table_ptr + p * E_PAD + tl.arange(0, E_PAD), hist)


@triton.jit(do_not_specialize=["numel", "num_chunks", "max_blocks", "sub"])
def _align_scatter_kernel(
    ids_ptr, map_ptr, table_ptr, cursor_ptr, sorted_ptr, expert_ids_ptr, npp_ptr,
    numel, top_k, stride_im, stride_ik, num_experts, num_chunks, max_blocks, sub,
    HAS_MAP: tl.constexpr, CHUNK: tl.constexpr, E_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCKS_PER_ITER: tl.constexpr, SINGLE: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """Slots of this program's share of the pairs, plus a share of the block expert ids and padding.

    ``SINGLE`` (every pair fits one chunk; decode): each program histograms all pairs itself, so no
    count launch is needed, and scatters pairs [p * sub, (p + 1) * sub). Otherwise program p scatters
    chunk p and reads the totals from the count table. Programs past the pairs only fill blocks:
    the grid is sized so that the per-block work is spread too.
    """
    _pdl_prologue(USE_PDL)
    p = tl.program_id(0)
    ev = tl.arange(0, E_PAD)
    if SINGLE:
        offs = tl.arange(0, CHUNK)
        e, ok = _local_expert(ids_ptr, map_ptr, offs, numel, top_k, stride_im, stride_ik, num_experts, HAS_MAP)
        lo = p * sub
        total = tl.histogram(e, E_PAD, mask=ok)
        before = tl.histogram(e, E_PAD, mask=ok & (offs < lo))
        mine = ok & (offs >= lo) & (offs < lo + sub)
    else:
        offs = p * CHUNK + tl.arange(0, CHUNK)
        e, ok = _local_expert(ids_ptr, map_ptr, offs, numel, top_k, stride_im, stride_ik, num_experts, HAS_MAP)
        mine = ok  # offs >= numel for programs past the last chunk: nothing to scatter
        total = tl.zeros([E_PAD], dtype=tl.int32)
        before = tl.zeros([E_PAD], dtype=tl.int32)
        # Every program re-derives the totals from the small count table: no inter-program dependency.
        for q in range(0, num_chunks):
            h = tl.load(table_ptr + q * E_PAD + ev)
            total += h
            before += tl.where(q < p, h, 0)
    padded = (total + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    end = tl.cumsum(padded, axis=0)
    start = end - padded

    # Each program owns row p of the cursor table, so its atomics only race with its own lanes.
    cur = cursor_ptr + p * E_PAD
    tl.store(cur + ev, start + before)
    tl.debug_barrier()
    pos = tl.atomic_add(cur + e, 1, mask=mine)
    tl.store(sorted_ptr + pos, offs, mask=mine)

    if p == 0:
        tl.store(npp_ptr, tl.sum(padded, axis=0))
    # Blocks: the expert of block b is the number of experts whose padded range ends at or before
    # b * BLOCK_M. Blocks past the padded total get expert E_PAD (never read: GEMMs exit early).
    valid_end = start + total
    bm = tl.arange(0, BLOCK_M)
    for b0 in range(p * BLOCKS_PER_ITER, max_blocks, tl.num_programs(0) * BLOCKS_PER_ITER):
        blocks = b0 + tl.arange(0, BLOCKS_PER_ITER)
        bmask = blocks < max_blocks
        row = blocks * BLOCK_M
        eb = tl.sum((end[None, :] <= row[:, None]).to(tl.int32), axis=1)
        tl.store(expert_ids_ptr + blocks, eb, mask=bmask)
        vend = tl.sum(tl.where(ev[None, :] == eb[:, None], valid_end[None, :], 0), axis=1)
        slots = row[:, None] + bm[None, :]
        pad = slots >= vend[:, None]
        # Padding slots are disjoint from the scattered ones, so no ordering with other programs.
        tl.store(sorted_ptr + slots, tl.zeros([BLOCKS_PER_ITER, BLOCK_M], dtype=tl.int32) + numel,
                 mask=bmask[:, None] & pad)


@triton.jit
def _swizzle(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped launch order: GROUP_M row blocks share each weight tile while it sits in L2."""
    in_group = GROUP_M * num_pid_n
    group = pid // in_group
    first_m = group * GROUP_M
    size_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % size_m
    pid_n = (pid % in_group) // size_m
    return pid_m, pid_n


@triton.jit
def _gemm1_tile(
    x_ptr, w13_ptr, act_ptr, tok, valid, e, out_rows, row_mask, pid_n, N, K, k_lo, k_iters,
    stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_am,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
    ONE_DOT: tl.constexpr, RAW: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N tile of silu(x[tok] @ gate.T) * (x[tok] @ up.T) of expert e, into act[out_rows].

    Over k in [k_lo, k_lo + k_iters * BLOCK_K). ``RAW`` (a split-K part): store the fp32 gate sums at
    columns [0, N) and the up sums at [N, 2N) of the fp32 rows instead; the reader applies SiLU.
    """
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    K = K - k_lo  # what is left from k_lo on: the masks below count from here
    x_ptr += k_lo * stride_xk
    w13_ptr += k_lo * stride_wk
    a_ptrs = x_ptr + tok[:, None] * stride_xm + offs_k[None, :] * stride_xk
    if ONE_DOT:
        j = tl.arange(0, 2 * BLOCK_N)
        col = pid_n * BLOCK_N + j // 2  # even columns: gate row col; odd: up row N + col
        c_ok = col < N
        b_ptrs = w13_ptr + e * stride_we + (col + (j % 2) * N)[None, :] * stride_wn + offs_k[:, None] * stride_wk
        acc = tl.zeros([BLOCK_M, 2 * BLOCK_N], dtype=tl.float32)
        for k in range(0, k_iters):
            if EVEN_K:
                a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
                b = tl.load(b_ptrs, mask=c_ok[None, :], other=0.0)
            else:
                k_ok = offs_k < K - k * BLOCK_K
                a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
                b = tl.load(b_ptrs, mask=k_ok[:, None] & c_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K * stride_xk
            b_ptrs += BLOCK_K * stride_wk
        # [m, 2c + t] -> [m, c, t]: t = 0 gate, t = 1 up.
        acc_g, acc_u = tl.split(tl.reshape(acc, [BLOCK_M, BLOCK_N, 2]))
    else:
        g_ptrs = w13_ptr + e * stride_we + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk
        u_ptrs = g_ptrs + N * stride_wn
        acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k in range(0, k_iters):
            if EVEN_K:
                a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
                bg = tl.load(g_ptrs, mask=n_ok[None, :], other=0.0)
                bu = tl.load(u_ptrs, mask=n_ok[None, :], other=0.0)
            else:
                k_ok = offs_k < K - k * BLOCK_K
                a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
                bg = tl.load(g_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                bu = tl.load(u_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc_g = tl.dot(a, bg, acc_g)
            acc_u = tl.dot(a, bu, acc_u)
            a_ptrs += BLOCK_K * stride_xk
            g_ptrs += BLOCK_K * stride_wk
            u_ptrs += BLOCK_K * stride_wk
    out_ptrs = act_ptr + out_rows[:, None].to(tl.int64) * stride_am + offs_n[None, :]
    if RAW:
        tl.store(out_ptrs, acc_g, mask=row_mask[:, None] & n_ok[None, :])
        tl.store(out_ptrs + N, acc_u, mask=row_mask[:, None] & n_ok[None, :])
    else:
        # SiLU in fp32; padding rows read zeros, so they hold silu(0) * 0 = 0 (never read anyway).
        act = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
        tl.store(out_ptrs, act.to(act_ptr.dtype.element_ty), mask=row_mask[:, None] & n_ok[None, :])




@triton.jit(do_not_specialize=["numel", "num_pid_m"])
def _gemm1_silu_kernel(
    x_ptr, w13_ptr, act_ptr, sorted_ptr, expert_ids_ptr, npp_ptr,
    numel, N, K, top_k, num_pid_m,
    stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_am,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
    USE_PDL: tl.constexpr = False,
    ONE_DOT: tl.constexpr = False,
):
    """act[pos, n] = silu(gate) * up for one BLOCK_M x BLOCK_N tile; rows gathered by sorted pair id.

    ``ONE_DOT``: gate and up columns interleaved into one [BLOCK_K, 2 * BLOCK_N] weight tile, so each
    step is one MMA twice as wide (the A tile is read from shared memory once, not twice).
    """
    _pdl_prologue(USE_PDL)
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = _swizzle(pid, num_pid_m, num_pid_n, GROUP_M)
    # Launched for the worst-case padded count; the real count lives in device memory.
    if pid_m * BLOCK_M >= tl.load(npp_ptr):
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + offs_m)
    valid = pair < numel
    tok = (pair // top_k).to(tl.int64)
    e = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    # Padding rows are stored too (zeros: their A rows read as 0) so GEMM2 reads defined values.
    _gemm1_tile(x_ptr, w13_ptr, act_ptr, tok, valid, e, offs_m, offs_m >= 0, pid_n, N, K, 0, tl.cdiv(K, BLOCK_K),
                stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_am,
                BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, ONE_DOT, False)


@triton.jit(do_not_specialize=["numel"])
def _gemm1_direct_kernel(
    x_ptr, w13_ptr, act_ptr, ids_ptr, map_ptr,
    numel, N, K, top_k, num_experts,
    stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_am, stride_im, stride_ik,
    HAS_MAP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, EVEN_K: tl.constexpr,
    USE_PDL: tl.constexpr = False,
    ONE_DOT: tl.constexpr = False,
    SPLIT_K: tl.constexpr = 1,
):
    """Decode path, no alignment: program (pair, n tile) computes act[pair] with the pair's own expert.

    Row 0 of the BLOCK_M tile is the pair (tl.dot needs >= 16 rows; the others are masked off and cost
    no memory traffic). Pairs of other ranks' experts exit at once; their act rows are never read.
    ``SPLIT_K`` > 1: program (pair, n tile, s) sums K / SPLIT_K of the reduction into fp32 part s of
    ``act`` ([SPLIT_K, numel, 2N]); the direct GEMM2 adds the parts in order and applies SiLU. More
    programs keep more weight bytes in flight when a few tokens cannot fill the GPU.
    """
    _pdl_prologue(USE_PDL)
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_s = pid % SPLIT_K
    pid_m, pid_n = _swizzle(pid // SPLIT_K, numel, num_pid_n, GROUP_M)
    g = tl.load(ids_ptr + (pid_m // top_k) * stride_im + (pid_m % top_k) * stride_ik).to(tl.int32)
    if HAS_MAP:
        le = tl.load(map_ptr + g).to(tl.int32)
    else:
        le = g
    if (le < 0) | (le >= num_experts):
        return
    rows = tl.arange(0, BLOCK_M)
    valid = rows == 0
    tok = tl.where(valid, pid_m // top_k, 0).to(tl.int64)
    out_rows = tl.where(valid, pid_s * numel + pid_m, 0)
    k_part = K // SPLIT_K  # the host checked K % (SPLIT_K * BLOCK_K) == 0
    _gemm1_tile(x_ptr, w13_ptr, act_ptr, tok, valid, le.to(tl.int64), out_rows, valid, pid_n, N, K,
                pid_s * k_part, tl.cdiv(k_part, BLOCK_K),
                stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_am,
                BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, ONE_DOT, SPLIT_K > 1)


@triton.jit(do_not_specialize=["numel", "num_pid_m"])
def _gemm2_kernel(
    act_ptr, w2_ptr, y_ptr, sorted_ptr, expert_ids_ptr, npp_ptr, tw_ptr,
    numel, N, K, top_k, num_pid_m,
    stride_am, stride_we, stride_wk, stride_wn, stride_ym, stride_twm, stride_twk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """y[pair, n] = weight[pair] * act[pos] @ w2[e, n].T for one tile; N is the reduction (intermediate) size."""
    _pdl_prologue(USE_PDL)
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(K, BLOCK_N)
    pid_m, pid_n = _swizzle(pid, num_pid_m, num_pid_n, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(npp_ptr):
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + offs_m)
    valid = pair < numel
    e = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    offs_k = tl.arange(0, BLOCK_K)
    # act rows are the padded sorted positions: contiguous, no gather needed.
    a_ptrs = act_ptr + offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :]
    b_ptrs = w2_ptr + e * stride_we + offs_n[None, :] * stride_wk + offs_k[:, None] * stride_wn
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, tl.cdiv(N, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
        else:
            k_ok = offs_k < N - k * BLOCK_K
            a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_wn
    tok = pair // top_k
    slot = pair % top_k
    w = tl.load(tw_ptr + tok * stride_twm + slot * stride_twk, mask=valid, other=0.0).to(tl.float32)
    acc = acc * w[:, None]
    y_ptrs = y_ptr + pair[:, None].to(tl.int64) * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=valid[:, None] & n_ok[None, :])


@triton.jit
def _direct_act_tile(act_ptr, rows, offs_k, amask, N, stride_am, numel,
                     TOP_K_PAD: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, OUT_TY: tl.constexpr):
    """[TOP_K_PAD, BLOCK_K] of act for the direct GEMM2: stored bf16 rows, or the sum of the fp32 split-K
    parts in a fixed order with SiLU(gate) * up applied and rounded like the unsplit GEMM1 stores it."""
    if SPLIT_K == 1:
        a = tl.load(act_ptr + rows[:, None] * stride_am + offs_k[None, :], mask=amask, other=0.0)
    else:
        gs = tl.zeros([TOP_K_PAD, BLOCK_K], dtype=tl.float32)
        us = tl.zeros([TOP_K_PAD, BLOCK_K], dtype=tl.float32)
        for sp in tl.static_range(SPLIT_K):
            base = act_ptr + (sp * numel + rows)[:, None] * stride_am + offs_k[None, :]
            gs += tl.load(base, mask=amask, other=0.0)
            us += tl.load(base + N, mask=amask, other=0.0)
        a = (gs / (1.0 + tl.exp(-gs)) * us).to(OUT_TY)
    return a.to(tl.float32)


@triton.jit
def _gemm2_direct_kernel(
    act_ptr, w2_ptr, out_ptr, ids_ptr, map_ptr, tw_ptr,
    N, K, num_experts,
    stride_am, stride_we, stride_wk, stride_wn, stride_om, stride_ok, stride_im, stride_ik,
    stride_twm, stride_twk,
    TOP_K: tl.constexpr, TOP_K_PAD: tl.constexpr, HAS_MAP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr = False,
    SPLIT_K: tl.constexpr = 1,
    PREFETCH: tl.constexpr = False,
):
    """Decode path: out[m, n tile] = sum_j w[m, j] * w2[e_j, n tile] @ act[m * top_k + j], in fp32.

    One program per (token, n tile) loads the tiles of all top_k experts at once (a [TOP_K, BLOCK_N,
    BLOCK_K] gather, so the loads are in flight together), reduces over the intermediate size and then
    over j in a fixed order, and writes the destination directly: no y buffer, no top-k sum launch.
    Pairs of other ranks' experts are masked off (no memory traffic) and add 0.

    ``SPLIT_K`` > 1: ``act`` holds GEMM1's fp32 split-K parts ([SPLIT_K, numel, 2N]).
    ``PREFETCH`` (with PDL): the routing and the first w2 tile are loaded BEFORE waiting for GEMM1, so
    they stream while GEMM1 finishes. Safe: GEMM1 writes only ``act``, and GEMM1 lets this grid launch
    only after its own wait, when everything before GEMM1 (the router's ids and weights) has completed.
    """
    if not PREFETCH:
        _pdl_prologue(USE_PDL)
    m = tl.program_id(0).to(tl.int64)
    numel = tl.num_programs(0) * TOP_K
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    jv = tl.arange(0, TOP_K_PAD)
    j_ok = jv < TOP_K
    g = tl.load(ids_ptr + m * stride_im + jv * stride_ik, mask=j_ok, other=0).to(tl.int32)
    if HAS_MAP:
        le = tl.load(map_ptr + g, mask=j_ok, other=-1).to(tl.int32)
    else:
        le = g
    use = j_ok & (le >= 0) & (le < num_experts)
    e = tl.where(use, le, 0).to(tl.int64)
    w = tl.load(tw_ptr + m * stride_twm + jv * stride_twk, mask=use, other=0.0).to(tl.float32)
    rows = m * TOP_K + jv
    b_ptrs = w2_ptr + e[:, None, None] * stride_we + offs_n[None, :, None] * stride_wk
    offs_k = tl.arange(0, BLOCK_K)
    k_ok = offs_k < N
    b = tl.load(b_ptrs + offs_k[None, None, :] * stride_wn,
                mask=use[:, None, None] & n_ok[None, :, None] & k_ok[None, None, :], other=0.0)
    if PREFETCH:
        _pdl_prologue(USE_PDL)
    a = _direct_act_tile(act_ptr, rows, offs_k, use[:, None] & k_ok[None, :], N, stride_am, numel,
                         TOP_K_PAD, BLOCK_K, SPLIT_K, w2_ptr.dtype.element_ty)
    acc = tl.sum(b.to(tl.float32) * a[:, None, :], axis=2)
    for k in range(1, tl.cdiv(N, BLOCK_K)):
        offs_k = k * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = offs_k < N
        b = tl.load(b_ptrs + offs_k[None, None, :] * stride_wn,
                    mask=use[:, None, None] & n_ok[None, :, None] & k_ok[None, None, :], other=0.0)
        a = _direct_act_tile(act_ptr, rows, offs_k, use[:, None] & k_ok[None, :], N, stride_am, numel,
                             TOP_K_PAD, BLOCK_K, SPLIT_K, w2_ptr.dtype.element_ty)
        acc += tl.sum(b.to(tl.float32) * a[:, None, :], axis=2)
    res = tl.sum(acc * w[:, None], axis=0)
    tl.store(out_ptr + m * stride_om + offs_n * stride_ok, res.to(out_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _topk_sum_kernel(
    y_ptr, out_ptr, ids_ptr, map_ptr,
    K, top_k, num_experts, stride_ym, stride_om, stride_ok, stride_im, stride_ik,
    HAS_MAP: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """out[m, :] = sum_j y[m * top_k + j, :] in fp32, in a fixed order; skipped pairs add 0."""
    _pdl_prologue(USE_PDL)
    m = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = offs < K
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for j in range(0, top_k):
        g = tl.load(ids_ptr + m * stride_im + j * stride_ik).to(tl.int32)
        if HAS_MAP:
            e = tl.load(map_ptr + g).to(tl.int32)
        else:
            e = g
        # A pair of another rank's expert was never computed: its y row is garbage, never read.
        use = (e >= 0) & (e < num_experts)
        row = (m * top_k + j).to(tl.int64)
        acc += tl.load(y_ptr + row * stride_ym + offs, mask=k_ok & use, other=0.0).to(tl.float32)
    o_ptrs = out_ptr + m.to(tl.int64) * stride_om + offs * stride_ok
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=k_ok)
