"""Presets, the layer stack and the demo targets (exact copy counts without copyhunt's tracer)."""

from __future__ import annotations

import pytest
import torch

from copyhunt_moe import demo
from copyhunt_moe.errors import MoEConfigError, UnknownPresetError
from copyhunt_moe.layer import MoELayer, MoEStack, make_expert_map
from copyhunt_moe.modular import copy_sites
from copyhunt_moe.presets import PRESETS, MoEPreset, get_preset
from copyhunt_moe.reference import reference_experts
from copyhunt_moe.testing import TOLERANCE, CopyCounter, poison_, rel_error
from copyhunt_moe.torch_experts import TorchExperts
from copyhunt_moe.workspace import WorkspaceManager

SITES = copy_sites()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRESET", "LAYERS", "TOKENS", "BACKEND", "DEVICE", "SEED"):
        monkeypatch.delenv(f"COPYHUNT_MOE_{name}", raising=False)


def test_minimax_presets() -> None:
    tp4, tp8, ep8 = (get_preset(f"minimax-m2.5-{s}") for s in ("tp4", "tp8", "ep8"))
    # MoE intermediate 1536 per expert: TP4 -> 384, TP8 -> 192, EP8 keeps whole experts.
    assert (tp4.num_experts, tp4.hidden, tp4.intermediate, tp4.top_k) == (256, 3072, 384, 8)
    assert tp8.intermediate == 192
    assert (ep8.intermediate, ep8.local_experts, ep8.ep_size) == (1536, 32, 8)
    assert all(p.scoring == "sigmoid" and p.routing_bias and p.model_layers == 62 for p in (tp4, tp8, ep8))
    assert tp4.output_bytes(1) == 6144  # one token: 3072 x bf16 = 6 KiB per copy
    assert tp4.weight_bytes() == 256 * 3 * 384 * 3072 * 2
    assert set(PRESETS) == {"minimax-m2.5-tp4", "minimax-m2.5-tp8", "minimax-m2.5-ep8", "tiny"}


def test_ep8_expert_map_keeps_rank_zero_experts_only() -> None:
    expert_map = make_expert_map(get_preset("minimax-m2.5-ep8"), "cpu")
    assert expert_map.tolist() == list(range(32)) + [-1] * 224


def test_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(UnknownPresetError, match="valid: minimax-m2.5-tp4, minimax-m2.5-tp8"):
        get_preset("minimax-m3")


def test_bad_preset_values_are_config_errors() -> None:
    with pytest.raises(MoEConfigError, match="top_k 9 > num_experts 8"):
        MoEPreset(name="bad", num_experts=8, hidden=8, intermediate=8, top_k=9)
    with pytest.raises(MoEConfigError, match="not divisible by ep_size 3"):
        MoEPreset(name="bad", num_experts=8, hidden=8, intermediate=8, top_k=2, ep_size=3)


def test_stack_layers_share_one_workspace_and_differ_in_weights() -> None:
    stack = MoEStack(get_preset("tiny"), TorchExperts(), layers=3)
    assert all(layer.kernel.workspace is stack.workspace for layer in stack.layers)
    assert not torch.equal(stack.layers[0].w13, stack.layers[1].w13)
    # Seeded: the same seed gives the same weights.
    again = MoEStack(get_preset("tiny"), TorchExperts(), layers=1)
    assert torch.equal(stack.layers[0].w13, again.layers[0].w13)


def test_layer_matches_reference_and_stays_order_one() -> None:
    layer = MoELayer(get_preset("tiny"), TorchExperts(), WorkspaceManager(), mode="fixed", seed=5)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(8), dtype=torch.bfloat16)
    out = poison_(torch.empty_like(x))
    layer(x, output=out)
    weights, ids = layer.route(x)
    ref = reference_experts(x.double(), layer.w13.double(), layer.w2.double(), weights, ids)
    assert rel_error(out, ref) < TOLERANCE[torch.bfloat16]
    rms = out.float().pow(2).mean().sqrt().item()
    assert 0.05 < rms < 5.0  # weights scaled so bf16 outputs stay O(1)


def test_expert_parallel_layer_skips_other_ranks_experts() -> None:
    preset = MoEPreset(name="tiny-ep2", num_experts=8, hidden=64, intermediate=32, top_k=2, ep_size=2, ep_rank=1)
    layer = MoELayer(preset, TorchExperts(), WorkspaceManager(), mode="baseline", seed=2)
    assert layer.w13.shape == (4, 64, 64) and layer.expert_map.tolist() == [-1, -1, -1, -1, 0, 1, 2, 3]
    x = torch.randn(9, 64, generator=torch.Generator().manual_seed(9), dtype=torch.bfloat16)
    out = layer(x)
    weights, ids = layer.route(x)
    ref = reference_experts(x.double(), layer.w13.double(), layer.w2.double(), weights, ids,
                            expert_map=layer.expert_map)
    assert rel_error(out, ref) < TOLERANCE[torch.bfloat16]
    # A token routed only to experts 0..3 (another rank) gets exactly zero here.
    remote_only = (ids < 4).all(dim=1)
    if remote_only.any():
        assert bool((out[remote_only] == 0).all())


def test_demo_defaults_on_cpu() -> None:
    config = demo.resolve_config(device="cpu")
    assert config == demo.DemoConfig(preset="tiny", layers=4, tokens=4, backend="torch", device="cpu", seed=0)


def test_demo_baseline_has_exactly_two_copies_per_layer_at_the_two_lines() -> None:
    with CopyCounter() as counter:
        demo.baseline(device="cpu")
    layers = 4
    lines = [c.line for c in counter.copies]
    assert len(counter.copies) == 2 * layers  # and no other copy op anywhere in the step
    assert lines == [SITES["experts-copy"].line, SITES["finalize-copy"].line] * layers
    assert all(c.op == "aten.copy_.default" and not c.noop for c in counter.copies)


def test_demo_fixed_has_no_copy_and_the_same_result() -> None:
    base = demo.baseline(device="cpu")
    with CopyCounter() as counter:
        fixed = demo.fixed(device="cpu")
    assert counter.copies == []
    # Same weights, same inputs, same math: the copies only move bits.
    assert torch.equal(base, fixed)


def test_demo_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYHUNT_MOE_LAYERS", "2")
    monkeypatch.setenv("COPYHUNT_MOE_TOKENS", "3")
    with CopyCounter() as counter:
        out = demo.baseline(device="cpu")
    assert out.shape == (3, 64) and len(counter.copies) == 4  # 2 layers x 2 copies


def test_demo_keyword_arguments_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYHUNT_MOE_LAYERS", "2")
    assert demo.resolve_config(layers=1, device="cpu").layers == 1


@pytest.mark.parametrize("value", ["zero", "0", "-3"])
def test_demo_bad_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("COPYHUNT_MOE_LAYERS", value)
    with pytest.raises(MoEConfigError, match="COPYHUNT_MOE_LAYERS must be an integer >= 1"):
        demo.resolve_config(device="cpu")


def test_demo_unknown_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYHUNT_MOE_PRESET", "nope")
    with pytest.raises(UnknownPresetError):
        demo.baseline(device="cpu")


def test_default_demo_is_the_baseline() -> None:
    assert demo.main is demo.baseline
