"""The torch._grouped_mm experts on the CPU (torch's fallback path) in float32 against the reference."""

from __future__ import annotations

import pytest
import torch

from copyhunt_moe.experts import ExpertsBackend
from copyhunt_moe.grouped_mm_experts import GroupedMMExperts, grouped_mm_experts
from copyhunt_moe.reference import reference_experts

# fp32 everywhere, so only the accumulation order differs from the reference: ~1e-7 seen.
FP32_BOUND = 1e-5

CASES = {
    "m1": dict(M=1, E=4, N=8, K=16, top_k=2),
    "ragged": dict(M=37, E=6, N=12, K=20, top_k=3),
    "idle_experts": dict(M=5, E=8, N=8, K=16, top_k=1, only=[0, 5]),
    "topk_eq_e": dict(M=9, E=4, N=8, K=16, top_k=4),
    "expert_map": dict(M=12, E=4, N=8, K=16, top_k=3, e_global=8, emap=[-1, 0, -1, 1, 2, -1, -1, 3],
                       first=[0, 2, 5]),
}


def _case(spec: dict, seed: int) -> tuple:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(seed)
    M, E, N, K, top_k = spec["M"], spec["E"], spec["N"], spec["K"], spec["top_k"]
    pool = torch.tensor(spec.get("only", list(range(spec.get("e_global", E)))))
    ids = torch.stack([pool[torch.randperm(len(pool), generator=g)[:top_k]] for _ in range(M)])
    if "first" in spec:
        ids[0] = torch.tensor(spec["first"])  # token 0: only other ranks' experts
    emap = torch.tensor(spec["emap"], dtype=torch.int32) if "emap" in spec else None
    return (torch.randn(M, K, generator=g), torch.randn(E, 2 * N, K, generator=g) / K**0.5,
            torch.randn(E, K, N, generator=g) / N**0.5, torch.rand(M, top_k, generator=g), ids.to(torch.int32), emap)


@pytest.mark.parametrize("name", list(CASES))
def test_grouped_mm_matches_reference_into_destination(name: str) -> None:
    x, w13, w2, tw, ids, emap = _case(CASES[name], seed=len(name))
    out = torch.full_like(x, float("nan"))
    res = GroupedMMExperts().apply(x, w13, w2, tw, ids, expert_map=emap, output=out)
    ref = reference_experts(x, w13, w2, tw, ids, expert_map=emap)
    assert res is out
    assert torch.isfinite(out).all()
    assert float((out - ref).norm() / ref.norm()) < FP32_BOUND
    if "first" in CASES[name]:
        assert out[0].abs().max().item() == 0.0  # nothing computed for token 0: exactly zero


def test_grouped_mm_without_destination_allocates() -> None:
    x, w13, w2, tw, ids, _ = _case(CASES["ragged"], seed=3)
    res = grouped_mm_experts(x, w13, w2, tw, ids)
    assert res.shape == x.shape and res.dtype == x.dtype
    ref = reference_experts(x, w13, w2, tw, ids)
    assert float((res - ref).norm() / ref.norm()) < FP32_BOUND


def test_grouped_mm_is_a_destination_backend() -> None:
    b = GroupedMMExperts()
    assert isinstance(b, ExpertsBackend)
    assert b.supports_destination and b.name == "grouped_mm"
