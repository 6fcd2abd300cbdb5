"""GPU checks of the bundled MoE (marked ``gpu``: skipped cleanly without one).

Run on the device machine: ``python -m pytest -q tests/test_moe_gpu.py`` (torch 2.11 + triton 3.6).
- both paths x the GPU backends against the float32-accumulating reference (bf16 tolerance of METHOD.md),
  fresh random inputs, output poisoned before each run;
- CUDA-graph capture then replay with NEW inputs equals eager (to 1e-3), for both paths;
- baseline and fixed agree bit for bit; the demo's copies on the GPU are exactly 2 per layer / 0.
"""

from __future__ import annotations

import pytest
import torch

from copyhunt_moe import demo
from copyhunt_moe.backends import make_backend
from copyhunt_moe.errors import BackendUnavailableError
from copyhunt_moe.layer import MoELayer, MoEStack
from copyhunt_moe.modular import ModularMoE, copy_sites
from copyhunt_moe.presets import get_preset
from copyhunt_moe.reference import reference_experts
from copyhunt_moe.testing import TOLERANCE, CopyCounter, poison_, rel_error
from copyhunt_moe.workspace import WorkspaceManager

pytestmark = pytest.mark.gpu
DEV = "cuda"
SITES = copy_sites()


def _backend(name: str):
    try:
        return make_backend(name, device=DEV)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


def _x(tokens: int, hidden: int, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=DEV).manual_seed(seed)
    return torch.randn(tokens, hidden, generator=gen, device=DEV, dtype=torch.bfloat16)


@pytest.mark.parametrize("backend_name", ["triton", "grouped_mm", "torch"])
@pytest.mark.parametrize("mode", ["baseline", "fixed"])
@pytest.mark.parametrize("preset_name", ["minimax-m2.5-tp4", "minimax-m2.5-ep8"])
def test_paths_match_reference_on_gpu(backend_name: str, mode: str, preset_name: str) -> None:
    backend = _backend(backend_name)
    layer = MoELayer(get_preset(preset_name), backend, WorkspaceManager(), mode=mode, device=DEV, seed=3)
    for seed, tokens in ((1, 1), (2, 7), (3, 64)):
        x = _x(tokens, layer.preset.hidden, seed)
        weights, ids = layer.route(x)
        out = poison_(torch.empty_like(x))
        poison_(layer.kernel.workspace.get(tuple(x.shape), x.dtype, x.device))
        layer.kernel.apply(x, layer.w13, layer.w2, weights, ids, expert_map=layer.expert_map, output=out)
        torch.cuda.synchronize()
        # float32 accumulation, kept in float32 (not rounded back to bf16) for the comparison
        ref = torch.empty(x.shape, dtype=torch.float32, device=DEV)
        reference_experts(x, layer.w13, layer.w2, weights, ids, expert_map=layer.expert_map, out=ref)
        err = rel_error(out, ref)
        assert err < TOLERANCE[torch.bfloat16], f"{backend_name} {mode} {preset_name} M={tokens}: {err:.2e}"


@pytest.mark.parametrize("backend_name", ["triton", "grouped_mm"])
def test_baseline_and_fixed_agree_bit_for_bit(backend_name: str) -> None:
    backend = _backend(backend_name)
    preset = get_preset("minimax-m2.5-tp4")
    stack = MoEStack(preset, backend, layers=2, device=DEV, seed=4)
    x = _x(8, preset.hidden, 5)
    with torch.no_grad():
        stack.set_mode("baseline")
        base = stack(x)
        stack.set_mode("fixed")
        fixed = stack(x)
    assert torch.equal(base, fixed)


@pytest.mark.parametrize("mode", ["baseline", "fixed"])
def test_cuda_graph_replay_with_new_inputs_equals_eager(mode: str) -> None:
    backend = _backend("triton")
    preset = get_preset("minimax-m2.5-tp4")
    stack = MoEStack(preset, backend, layers=2, mode=mode, device=DEV, seed=6)
    static_x = _x(8, preset.hidden, 7)
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up: Triton compiles, the workspace reaches its size
                stack(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        grows = stack.workspace.grow_count
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = stack(static_x)
        assert stack.workspace.grow_count == grows  # no allocation of the shared buffer under capture
        previous = static_out.clone()
        for seed in (8, 9, 10):
            new_x = _x(8, preset.hidden, seed)
            static_x.copy_(new_x)
            graph.replay()
            eager = stack(new_x)
            torch.cuda.synchronize()
            # Same kernels on new data: a stale input or an unwritten output gives an error ~1. The bound
            # is not 0 because cuBLAS may pick another algorithm for the router GEMM under capture.
            err = rel_error(static_out, eager)
            assert err < 1e-3, f"replay differs from eager: {err:.2e}"
            assert not torch.equal(static_out, previous)  # the replay really saw the new input
            previous = static_out.clone()


def test_demo_copies_on_gpu() -> None:
    _backend("triton")
    with CopyCounter() as counter:
        demo.baseline(layers=3, device=DEV, backend="triton")
    lines = [c.line for c in counter.copies]
    assert lines == [SITES["experts-copy"].line, SITES["finalize-copy"].line] * 3
    with CopyCounter() as counter:
        demo.fixed(layers=3, device=DEV, backend="triton")
    assert counter.copies == []


def test_fixed_kernel_writes_into_the_callers_buffer_on_gpu() -> None:
    backend = _backend("triton")
    layer = MoELayer(get_preset("minimax-m2.5-tp8"), backend, WorkspaceManager(), mode="fixed", device=DEV)
    x = _x(16, layer.preset.hidden, 11)
    out = poison_(torch.empty_like(x))
    result = layer(x, output=out)
    assert result is out and layer.kernel.last_call.path == "output-alias"
    assert layer.kernel.ignored_destination == 0
    assert isinstance(layer.kernel, ModularMoE) and bool(torch.isfinite(out).all())
