"""Block-size configs, the checked-in tuned table, input checks and lazy import (CPU; triton not needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pytest
import torch

from copyhunt_moe.align import max_padded_blocks
from copyhunt_moe.errors import MoEConfigError
from copyhunt_moe.triton_experts import (
    GemmConfig,
    MoEConfig,
    config_file_name,
    default_config,
    load_config_table,
    pick_config,
    triton_moe_experts,
)


@pytest.mark.parametrize(
    "kwargs",
    [dict(block_n=48), dict(block_k=8), dict(num_warps=3), dict(group_m=0), dict(num_stages=0)],
)
def test_gemm_config_rejects_bad_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(MoEConfigError, match=next(iter(kwargs))):
        GemmConfig(**kwargs)


def test_moe_config_rejects_bad_block_m() -> None:
    with pytest.raises(MoEConfigError, match="block_m=8"):
        MoEConfig(block_m=8)
    with pytest.raises(MoEConfigError, match="block_m=24"):
        MoEConfig(block_m=24)


def test_config_dict_round_trip() -> None:
    cfg = MoEConfig(32, GemmConfig(64, 128, 4, 8, 3), GemmConfig(128, 64, 1, 4, 5), reduce_block=512)
    assert MoEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    ("numel", "experts", "block_m", "expected"),
    [
        (8, 256, 16, 8),  # M=1, top-8: 8 busy experts -> (8 + 8 * 15) / 16 = 128 / 16 = 8
        (3, 4, 16, 3),  # 3 busy -> (3 + 3 * 15) / 16 = 48 / 16 = 3
        (131072, 256, 128, 1278),  # M=16384: (131072 + 256 * 127) / 128 = 163584 / 128 = 1278
        (512, 256, 16, 272),  # M=64: (512 + 256 * 15) / 16 = 4352 / 16 = 272
        (5, 8, 32, 5),  # (5 + 5 * 31) / 32 = 160 / 32 = 5
        (6, 4, 16, 5),  # (6 + 4 * 15) / 16 = 66 / 16 -> 5 (ceil)
    ],
)
def test_max_padded_blocks(numel: int, experts: int, block_m: int, expected: int) -> None:
    assert max_padded_blocks(numel, experts, block_m) == expected


def test_checked_in_table_loads_and_covers_the_benchmark_token_counts() -> None:
    path = resources.files("copyhunt_moe").joinpath("configs", config_file_name(256, 384, 3072))
    data = json.loads(path.read_text())
    assert data["shape"] == {"E": 256, "N": 384, "K": 3072, "top_k": 8, "dtype": "bfloat16"}
    table = load_config_table(256, 384, 3072)
    assert table is not None
    assert sorted(table) == [1, 8, 64, 256, 1024, 4096, 16384]
    for M, cfg in table.items():
        assert pick_config(M, 256, 384, 3072, 8) == cfg


def test_pick_config_nearest_in_log_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    small, mid, big = MoEConfig(16), MoEConfig(32), MoEConfig(128)
    table = {1: small, 64: mid, 4096: big}
    monkeypatch.setattr("copyhunt_moe.triton_experts.load_config_table", lambda e, n, k: table)
    # bit_length: 1 -> 1, 64 -> 7, 4096 -> 13. M=5 (3) is 2 from 1 and 4 from 64;
    # M=512 (10) is 3 from both 64 and 4096: a tie goes to the smaller key, 64.
    assert pick_config(5, 1, 1, 1, 8) is small
    assert pick_config(512, 1, 1, 1, 8) is mid
    assert pick_config(1000, 1, 1, 1, 8) is mid  # 1000 -> 10 as well
    assert pick_config(2048, 1, 1, 1, 8) is big  # 2048 -> 12: 5 from 64, 1 from 4096
    assert pick_config(100000, 1, 1, 1, 8) is big


def test_shapes_without_a_table_use_the_heuristic() -> None:
    assert load_config_table(7, 11, 13) is None
    assert pick_config(3, 7, 11, 13, 2) == default_config(3, 2)


def _args(M: int = 4, E: int = 4, N: int = 8, K: int = 16, top_k: int = 2) -> list[torch.Tensor]:
    return [
        torch.randn(M, K),
        torch.randn(E, 2 * N, K),
        torch.randn(E, K, N),
        torch.rand(M, top_k),
        torch.zeros(M, top_k, dtype=torch.int32),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.__setitem__(2, torch.randn(4, 16, 9)), "do not match"),
        (lambda a: a.__setitem__(1, a[1].double()), "must share one of"),
        (lambda a: a.__setitem__(4, a[4].float()), "int32 or int64"),
        (lambda a: a.__setitem__(3, torch.rand(4, 3)), "top_k"),
        (lambda a: a.__setitem__(1, a[1].transpose(1, 2).contiguous().transpose(1, 2)), "contiguous last"),
    ],
)
def test_bad_inputs_raise_before_any_kernel(change, message: str) -> None:  # type: ignore[no-untyped-def]
    args = _args()
    change(args)
    with pytest.raises(MoEConfigError, match=message):
        triton_moe_experts(*args)


def test_bad_destination_is_rejected() -> None:
    with pytest.raises(MoEConfigError, match=r"output must be \[4, 16\]"):
        triton_moe_experts(*_args(), output=torch.empty(4, 16, dtype=torch.float16))


def test_import_does_not_need_triton() -> None:
    code = (
        "import sys, copyhunt_moe.triton_experts, copyhunt_moe.grouped_mm_experts, copyhunt_moe.align;"
        "print('triton' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
