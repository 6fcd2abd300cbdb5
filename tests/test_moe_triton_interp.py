"""The Triton MoE kernels under TRITON_INTERPRET=1 on the CPU (tiny shapes, fp32/fp16).

The interpreter must be on before triton's ``@jit`` decorators run, and another test module may already
have imported the kernels compiled, so every case runs in ONE child process (this file run as a script
with TRITON_INTERPRET=1); the tests below check the child's JSON results case by case.
The interpreter reads bf16 wrongly, so bf16 is checked on the GPU (tests/test_moe_triton_gpu.py).

Error bounds (||out - ref|| / ||ref||, reference = reference.py in fp32 with the same intermediate
rounding): fp32 1e-5 (only the accumulation order differs: ~1e-7 seen); fp16 2e-3 (the weighted
expert output and the result are each rounded to fp16 once more than the fp32 reference: 2 x ~3e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("triton")

FP32_BOUND = 1e-5
FP16_BOUND = 2e-3

# name: (M, E_local, N, K, top_k, dtype, E_global or None (no expert_map), config, extra)
# Config tuple: (block_m, (g1 block_n, block_k, group_m), (g2 block_n, block_k, group_m)).
_SMALL = (16, (16, 32, 2), (32, 16, 2))
CASES: dict[str, dict[str, Any]] = {
    "m1": dict(M=1, E=4, N=32, K=64, top_k=2, dtype="float32", cfg=_SMALL),
    # M=37 and top_k=3: 111 pairs, not a multiple of BLOCK_M=16; N=48 and K=80 leave partial tiles.
    "ragged": dict(M=37, E=6, N=48, K=80, top_k=3, dtype="float32", cfg=_SMALL),
    # Only experts 0 and 5 of 8 get tokens: 6 experts receive nothing.
    "idle_experts": dict(M=5, E=8, N=32, K=64, top_k=1, dtype="float32", cfg=_SMALL, only=[0, 5]),
    "topk1": dict(M=20, E=4, N=32, K=64, top_k=1, dtype="float32", cfg=_SMALL),
    "topk_eq_e": dict(M=19, E=4, N=32, K=64, top_k=4, dtype="float32", cfg=_SMALL),
    # Expert parallelism: 8 global experts, 4 local; token 0 routed only to remote experts.
    "expert_map": dict(M=25, E=4, N=32, K=64, top_k=3, dtype="float32", cfg=_SMALL, e_global=8,
                       emap=[-1, 0, -1, 1, 2, -1, -1, 3], first_remote=[0, 2, 5]),
    "fp16": dict(M=33, E=4, N=32, K=64, top_k=2, dtype="float16", cfg=(32, (32, 64, 4), (64, 32, 4))),
    "int64_ids": dict(M=9, E=4, N=32, K=64, top_k=2, dtype="float32", cfg=_SMALL, ids64=True),
    "strided_output": dict(M=11, E=4, N=32, K=64, top_k=2, dtype="float32", cfg=_SMALL, out_t=True),
    "block_m_32": dict(M=50, E=5, N=32, K=64, top_k=2, dtype="float32", cfg=(32, (32, 32, 1), (16, 32, 8))),
    # 300 x 8 = 2400 pairs > one 2048-pair chunk: the two-launch align path (count table + scatter).
    "multi_chunk": dict(M=300, E=8, N=32, K=64, top_k=8, dtype="float32", cfg=(32, (32, 64, 4), (64, 64, 4))),
    # GEMM1 as one MMA over interleaved gate/up columns; ragged N (48 = 1.5 x 32) and K (80).
    "one_dot": dict(M=37, E=6, N=48, K=80, top_k=3, dtype="float32", cfg=(16, (32, 32, 2), (32, 16, 2)),
                    one_dot=True),
    # Decode path: no align, GEMM2 sums the top-k itself. With an expert map (token 0 all remote),
    # top_k = E, a ragged case with one-dot GEMM1, and fp16.
    "direct_map": dict(M=3, E=4, N=32, K=64, top_k=3, dtype="float32", cfg=_SMALL, e_global=8,
                       emap=[-1, 0, -1, 1, 2, -1, -1, 3], first_remote=[0, 2, 5], direct=True),
    "direct_topk_eq_e": dict(M=2, E=4, N=32, K=64, top_k=4, dtype="float32", cfg=_SMALL, direct=True),
    "direct_ragged_one_dot": dict(M=5, E=6, N=48, K=80, top_k=3, dtype="float32", cfg=_SMALL, direct=True,
                                  one_dot=True),
    "direct_fp16_m1": dict(M=1, E=8, N=32, K=64, top_k=8, dtype="float16", cfg=(16, (32, 64, 1), (16, 32, 1)),
                           direct=True),
    # Direct path with GEMM1 split over K (fp32 parts added by GEMM2): 2 parts with an expert map,
    # 4 parts in fp16 with the one-dot GEMM1.
    "direct_split2_map": dict(M=4, E=4, N=32, K=128, top_k=3, dtype="float32", cfg=_SMALL, e_global=8,
                              emap=[-1, 0, -1, 1, 2, -1, -1, 3], first_remote=[0, 2, 5], direct=True, split_k=2),
    "direct_split4_fp16": dict(M=2, E=8, N=48, K=128, top_k=8, dtype="float16", cfg=_SMALL, direct=True,
                               split_k=4, one_dot=True),
    "one_dot_fp16": dict(M=33, E=4, N=32, K=64, top_k=2, dtype="float16", cfg=(32, (16, 64, 4), (64, 32, 4)),
                         one_dot=True),
}


def _run_case(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """Run one case in the interpreter child; returns plain numbers for the parent's asserts."""
    import torch

    from copyhunt_moe.reference import reference_experts
    from copyhunt_moe.triton_experts import GemmConfig, MoEConfig, triton_moe_experts

    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, spec["dtype"])
    M, E, N, K, top_k = spec["M"], spec["E"], spec["N"], spec["K"], spec["top_k"]
    e_global = spec.get("e_global", E)
    x = torch.randn(M, K, generator=g).to(dtype)
    w13 = (torch.randn(E, 2 * N, K, generator=g) / K**0.5).to(dtype)
    w2 = (torch.randn(E, K, N, generator=g) / N**0.5).to(dtype)
    pool = torch.tensor(spec.get("only", list(range(e_global))))
    ids = torch.stack([pool[torch.randperm(len(pool), generator=g)[:top_k]] for _ in range(M)])
    if "first_remote" in spec:
        ids[0] = torch.tensor(spec["first_remote"][:top_k])
    ids = ids.to(torch.int64 if spec.get("ids64") else torch.int32)
    tw = torch.rand(M, top_k, generator=g)
    emap = torch.tensor(spec["emap"], dtype=torch.int32) if "emap" in spec else None
    bm, c1, c2 = spec["cfg"]
    cfg = MoEConfig(bm, GemmConfig(c1[0], c1[1], c1[2], 4, 2), GemmConfig(c2[0], c2[1], c2[2], 4, 2),
                    gate_up_one_dot=spec.get("one_dot", False), direct=spec.get("direct", False),
                    split_k=spec.get("split_k", 1), prefetch=spec.get("prefetch", False))
    out = torch.empty(K, M, dtype=dtype).t() if spec.get("out_t") else torch.empty(M, K, dtype=dtype)
    out.fill_(float("nan"))  # poisoned: every element must be written
    res = triton_moe_experts(x, w13, w2, tw, ids, expert_map=emap, output=out, config=cfg)
    ref = torch.empty(M, K, dtype=torch.float32)
    reference_experts(x, w13, w2, tw, ids, expert_map=emap, out=ref)
    diff = (res.double() - ref.double()).norm() / ref.double().norm()
    return {
        "is_output": res is out,
        "all_finite": bool(torch.isfinite(res).all()),
        "rel_err": float(diff),
        "row0_absmax": float(res[0].abs().max()),
    }


def _align_exact(blocks_per_iter: int) -> dict[str, Any]:
    """align_block_size on a hand-made routing: ids [[0,2],[2,3],[0,2]], E=4, BLOCK_M=16."""
    import torch

    from copyhunt_moe.align import align_block_size

    ids = torch.tensor([[0, 2], [2, 3], [0, 2]], dtype=torch.int32)
    al = align_block_size(ids, num_experts=4, block_m=16, blocks_per_iter=blocks_per_iter)
    s = al.sorted_ids.tolist()
    blocks = [sorted(s[b * 16:(b + 1) * 16]) for b in range(al.max_blocks)]
    return {
        "max_blocks": al.max_blocks,
        "num_padded": int(al.num_padded[0]),
        "expert_ids": al.expert_ids.tolist()[:3],
        "blocks": blocks[:3],
    }


def _align_invariants(seed: int, M: int, blocks_per_iter: int) -> dict[str, Any]:
    """Random top-8 routing with an expert map: check the layout's invariants."""
    import torch

    from copyhunt_moe.align import align_block_size

    g = torch.Generator().manual_seed(seed)
    top_k, e_global, e_local, bm = 8, 24, 16, 16
    ids = torch.stack([torch.randperm(e_global, generator=g)[:top_k] for _ in range(M)]).to(torch.int32)
    emap = torch.full((e_global,), -1, dtype=torch.int32)
    emap[torch.randperm(e_global, generator=g)[:e_local]] = torch.arange(e_local, dtype=torch.int32)
    al = align_block_size(ids, e_local, bm, emap, blocks_per_iter=blocks_per_iter)
    local = emap.long()[ids.long()].reshape(-1)
    numel = M * top_k
    counts = torch.bincount(local[local >= 0], minlength=e_local)
    expect_padded = int(((counts + bm - 1) // bm * bm).sum())
    npp = int(al.num_padded[0])
    s = al.sorted_ids[:npp].long()
    real = s[s < numel]
    homogeneous = all(
        bool((local[s[b * bm:(b + 1) * bm][s[b * bm:(b + 1) * bm] < numel]] == int(al.expert_ids[b])).all())
        for b in range(npp // bm)
    )
    return {
        "num_padded": npp,
        "expect_padded": expect_padded,
        "each_local_pair_once": sorted(real.tolist()) == torch.nonzero(local >= 0).reshape(-1).tolist(),
        "blocks_homogeneous": homogeneous,
        "tail_is_sentinel": bool((al.sorted_ids[npp:] == numel).all()),
    }


def _worker() -> None:
    """Child process entry: run every case, print one JSON line."""
    results: dict[str, Any] = {}
    for i, (name, spec) in enumerate(CASES.items()):
        try:
            results[name] = _run_case(spec, seed=1000 + i)
        except Exception as exc:  # reported per case by the parent, with its message
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    # 1 block per iteration: 5 blocks -> 5 programs, each scattering cdiv(6, 5) = 2 pairs.
    for name, bpi in (("align_exact", 16), ("align_exact_5_programs", 1)):
        try:
            results[name] = _align_exact(bpi)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    # 750 x 8 = 6000 pairs: 3 chunks, two launches. 200 x 8 = 1600 pairs: one chunk, and with 2 blocks
    # per iteration (16 * 15 + 1600) / 16 = 115 blocks -> 58 programs splitting the scatter.
    for name, M, bpi in (("align_invariants", 750, 16), ("align_invariants_single_many_programs", 200, 2)):
        try:
            results[name] = _align_invariants(seed=7, M=M, blocks_per_iter=bpi)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULTS " + json.dumps(results))


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert proc.returncode == 0 and line is not None, proc.stderr[-4000:]
    return json.loads(line[len("RESULTS "):])


@pytest.mark.triton_interpret
@pytest.mark.parametrize("name", list(CASES))
def test_triton_experts_match_reference(results: dict[str, Any], name: str) -> None:
    r = results[name]
    assert "error" not in r, r.get("error")
    assert r["is_output"], "the result must be the caller's output tensor (destination passing)"
    assert r["all_finite"], "a poisoned (NaN) output element was not overwritten"
    bound = FP16_BOUND if CASES[name]["dtype"] == "float16" else FP32_BOUND
    assert r["rel_err"] < bound


@pytest.mark.triton_interpret
@pytest.mark.parametrize("name", ["expert_map", "direct_map", "direct_split2_map"])
def test_token_routed_only_to_remote_experts_is_exactly_zero(results: dict[str, Any], name: str) -> None:
    # Token 0 goes to global experts 0, 2, 5, all -1 in the expert map: nothing computed, sum of nothing.
    assert results[name]["row0_absmax"] == 0.0


@pytest.mark.triton_interpret
@pytest.mark.parametrize("name", ["align_exact", "align_exact_5_programs"])
def test_align_exact_layout(results: dict[str, Any], name: str) -> None:
    r = results[name]
    assert "error" not in r, r.get("error")
    # 6 pairs (sentinel 6). Counts: e0 {0, 4}, e1 none, e2 {1, 2, 5}, e3 {3}; each padded to 16.
    # Worst case: min(6, 4) = 4 busy experts -> (6 + 4 * 15) / 16 = 66 / 16 -> 5 blocks.
    assert r["max_blocks"] == 5
    assert r["num_padded"] == 48  # 16 + 0 + 16 + 16
    assert r["expert_ids"] == [0, 2, 3]
    assert r["blocks"][0] == [0, 4] + [6] * 14
    assert r["blocks"][1] == [1, 2, 5] + [6] * 13
    assert r["blocks"][2] == [3] + [6] * 15


@pytest.mark.triton_interpret
@pytest.mark.parametrize("name", ["align_invariants", "align_invariants_single_many_programs"])
def test_align_invariants_with_expert_map(results: dict[str, Any], name: str) -> None:
    r = results[name]
    assert "error" not in r, r.get("error")
    assert r["num_padded"] == r["expect_padded"]  # sum over local experts of ceil(count / 16) * 16
    assert r["each_local_pair_once"]
    assert r["blocks_homogeneous"]
    assert r["tail_is_sentinel"]


if __name__ == "__main__":
    _worker()
