"""The modular MoE kernel: both paths x both pure-torch implementations against a float64 reference,
the two baseline copies at their lines, and the reviewers' hazards as tests that fail on unsafe fixes."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch

from copyhunt_moe.errors import MoEConfigError
from copyhunt_moe.modular import ModularMoE, copy_sites
from copyhunt_moe.reference import reference_experts
from copyhunt_moe.routing import route
from copyhunt_moe.testing import TOLERANCE, CopyCounter, poison_, rel_error
from copyhunt_moe.torch_experts import LibraryExperts, ReferenceExperts, TorchExperts
from copyhunt_moe.workspace import WorkspaceManager

M, K, N, E, TOP_K = 5, 64, 32, 8, 2
SITES = copy_sites()


@dataclass
class Problem:
    x: torch.Tensor
    w13: torch.Tensor
    w2: torch.Tensor
    weights: torch.Tensor
    ids: torch.Tensor
    expert_map: torch.Tensor | None

    def oracle(self) -> torch.Tensor:
        """float64 reference of the experts' weighted sum."""
        return reference_experts(
            self.x.double(), self.w13.double(), self.w2.double(), self.weights, self.ids,
            expert_map=self.expert_map,
        )

    def args(self) -> tuple:
        return (self.x, self.w13, self.w2, self.weights, self.ids)


def make_problem(seed: int, *, dtype: torch.dtype = torch.bfloat16, ep: bool = False, tokens: int = M) -> Problem:
    """Fresh random inputs for every check (never zeros)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, K, generator=gen, dtype=dtype)
    num_global = 2 * E if ep else E
    logits = torch.randn(tokens, num_global, generator=gen)
    weights, ids = route(logits, TOP_K, scoring="sigmoid", bias=torch.randn(num_global, generator=gen) * 0.1)
    w13 = torch.randn(E, 2 * N, K, generator=gen, dtype=dtype) * K**-0.5
    w2 = torch.randn(E, K, N, generator=gen, dtype=dtype) * N**-0.5
    # EP: this rank owns global experts 8..15 (local 0..7); 0..7 belong to another rank.
    expert_map = torch.cat([torch.full((E,), -1), torch.arange(E)]) if ep else None
    return Problem(x, w13, w2, weights, ids, expert_map)


def poisoned_output(p: Problem) -> torch.Tensor:
    return poison_(torch.empty_like(p.x))


def poison_workspace(ws: WorkspaceManager, p: Problem) -> None:
    poison_(ws.get(tuple(p.x.shape), p.x.dtype, p.x.device))


BACKENDS = {"torch": TorchExperts, "reference": ReferenceExperts, "library": LibraryExperts}


@pytest.mark.parametrize("mode", ["baseline", "fixed"])
@pytest.mark.parametrize("backend", ["torch", "reference", "library"])
@pytest.mark.parametrize("ep", [False, True], ids=["all-local", "ep"])
def test_paths_match_reference(mode: str, backend: str, ep: bool) -> None:
    ws = WorkspaceManager()
    moe = ModularMoE(BACKENDS[backend](), ws, mode=mode)
    for seed in (1, 2):
        p = make_problem(seed + (100 if ep else 0), ep=ep)
        out = poisoned_output(p)
        poison_workspace(ws, p)
        result = moe.apply(*p.args(), expert_map=p.expert_map, output=out)
        assert result is out  # the caller's buffer, never a workspace view
        assert rel_error(out, p.oracle()) < TOLERANCE[torch.bfloat16]


def test_float32_paths_match_reference_tightly() -> None:
    p = make_problem(7, dtype=torch.float32)
    for mode in ("baseline", "fixed"):
        out = poison_(torch.empty_like(p.x))
        ModularMoE(TorchExperts(), WorkspaceManager(), mode=mode).apply(*p.args(), output=out)
        assert rel_error(out, p.oracle()) < TOLERANCE[torch.float32]


def test_output_is_allocated_when_not_given() -> None:
    p = make_problem(3)
    result = ModularMoE(TorchExperts(), WorkspaceManager(), mode="baseline").apply(*p.args())
    assert result.shape == p.x.shape and result.dtype == p.x.dtype
    assert rel_error(result, p.oracle()) < TOLERANCE[torch.bfloat16]


def test_baseline_makes_exactly_the_two_copies_at_their_lines() -> None:
    p = make_problem(4)
    moe = ModularMoE(TorchExperts(), WorkspaceManager(), mode="baseline")
    with CopyCounter() as counter:
        moe.apply(*p.args())
    experts, finalize = SITES["experts-copy"], SITES["finalize-copy"]
    assert [(c.op, c.line) for c in counter.copies] == [
        ("aten.copy_.default", experts.line),
        ("aten.copy_.default", finalize.line),
    ]
    assert all(c.file == experts.file and c.function == "apply" for c in counter.copies)
    assert (moe.last_call.path, moe.last_call.experts_copies, moe.last_call.finalize_copies) == ("workspace", 1, 1)


def test_fixed_makes_no_copy() -> None:
    p = make_problem(5)
    moe = ModularMoE(TorchExperts(), WorkspaceManager(), mode="fixed")
    out = poisoned_output(p)
    with CopyCounter() as counter:
        moe.apply(*p.args(), output=out)
    assert counter.copies == []
    assert (moe.last_call.path, moe.last_call.experts_copies, moe.last_call.finalize_copies) == ("output-alias", 0, 0)
    assert rel_error(out, p.oracle()) < TOLERANCE[torch.bfloat16]


def test_copy_sites_point_at_copy_lines() -> None:
    assert set(SITES) == {"experts-copy", "ignored-destination-copy", "finalize-copy"}
    lines = open(SITES["experts-copy"].file).read().splitlines()
    for site in SITES.values():
        assert ".copy_(" in lines[site.line - 1]
    assert SITES["experts-copy"].qualname == "LibraryStyleExperts.apply"
    assert SITES["finalize-copy"].qualname == "FinalizeNoOp.apply"
    assert SITES["ignored-destination-copy"].qualname == "DestinationExperts.apply"


# ---- hazard 1: layers share the workspace; a result must never be a workspace view -------------------


class ReturnsWorkspaceView(ModularMoE):
    """The rejected fix ``output = fused_out``: returns the shared workspace view (unsafe)."""

    def apply(self, x, w13, w2, topk_weights, topk_ids, *, expert_map=None, output=None):  # type: ignore[override]
        fused_out = self.workspace.get(tuple(x.shape), x.dtype, x.device)
        return self.backend.apply(x, w13, w2, topk_weights, topk_ids, expert_map=expert_map, output=fused_out)


def first_layer_survives(kernel_cls: type[ModularMoE], mode: str) -> bool:
    """Run two layers back to back on one workspace; is layer 1's output still its own result?"""
    ws = WorkspaceManager()
    p1, p2 = make_problem(11), make_problem(12)
    layer1 = kernel_cls(TorchExperts(), ws, mode=mode)
    layer2 = kernel_cls(TorchExperts(), ws, mode=mode)
    out1 = layer1.apply(*p1.args())  # no caller buffer: the kernel allocates (as vLLM does)
    snapshot = out1.clone()
    layer2.apply(*p2.args())
    return torch.equal(out1, snapshot) and rel_error(out1, p1.oracle()) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("mode", ["baseline", "fixed"])
def test_first_layer_output_intact_after_second_layer(mode: str) -> None:
    assert first_layer_survives(ModularMoE, mode)


def test_the_same_check_catches_returning_the_workspace_view() -> None:
    # The test above must be able to fail: the unsafe "return fused_out" fix is overwritten by layer 2.
    assert not first_layer_survives(ReturnsWorkspaceView, "fixed")


# ---- hazard 2: a backend that ignores the destination (vLLM #50338) -----------------------------------


class IgnoresDestination:
    """Claims destination passing but writes its result into a fresh tensor (the #50338 bug)."""

    name = "ignores-destination"
    supports_destination = True

    def apply(self, x, w13, w2, topk_weights, topk_ids, *, expert_map=None, output=None):
        return TorchExperts().apply(x, w13, w2, topk_weights, topk_ids, expert_map=expert_map)


def test_backend_ignoring_destination_is_detected_and_result_copied() -> None:
    p = make_problem(21)
    moe = ModularMoE(IgnoresDestination(), WorkspaceManager(), mode="fixed")
    out = poisoned_output(p)
    with CopyCounter() as counter:
        moe.apply(*p.args(), output=out)
    assert moe.ignored_destination == 1
    assert [c.line for c in counter.copies] == [SITES["ignored-destination-copy"].line]
    assert rel_error(out, p.oracle()) < TOLERANCE[torch.bfloat16]  # still correct, via the copy


# ---- fallbacks: when the caller's output cannot be the destination ------------------------------------


def test_non_contiguous_output_falls_back_to_the_copying_path() -> None:
    p = make_problem(31)
    big = torch.full((M, 2 * K), 7.0, dtype=p.x.dtype)
    out = big[:, :K]  # a strided view: cannot be handed to a kernel that writes dense rows
    poison_(out)
    moe = ModularMoE(TorchExperts(), WorkspaceManager(), mode="fixed")
    with CopyCounter() as counter:
        result = moe.apply(*p.args(), output=out)
    assert result is out
    assert (moe.last_call.path, moe.last_call.reason) == ("workspace", "output is not contiguous")
    assert [c.line for c in counter.copies] == [SITES["finalize-copy"].line]
    assert rel_error(out, p.oracle()) < TOLERANCE[torch.bfloat16]
    assert bool((big[:, K:] == 7.0).all())  # the other half of the caller's buffer untouched


def test_output_of_another_dtype_falls_back_and_converts() -> None:
    p = make_problem(32)
    out = poison_(torch.empty(M, K, dtype=torch.float32))
    moe = ModularMoE(TorchExperts(), WorkspaceManager(), mode="fixed")
    moe.apply(*p.args(), output=out)
    assert moe.last_call.reason == "output dtype torch.float32 != activation dtype torch.bfloat16"
    assert rel_error(out, p.oracle()) < TOLERANCE[torch.bfloat16]


def test_output_overlapping_input_is_not_aliased() -> None:
    p = make_problem(33)
    expected = p.oracle()
    x = p.x.clone()
    moe = ModularMoE(TorchExperts(), WorkspaceManager(), mode="fixed")
    moe.apply(x, p.w13, p.w2, p.weights, p.ids, output=x)  # in place over the activations
    assert moe.last_call.reason == "output shares storage with the input"
    assert rel_error(x, expected) < TOLERANCE[torch.bfloat16]


def test_library_backend_on_fixed_path_copies_once_into_output() -> None:
    p = make_problem(34)
    moe = ModularMoE(LibraryExperts(), WorkspaceManager(), mode="fixed")
    out = poisoned_output(p)
    with CopyCounter() as counter:
        moe.apply(*p.args(), output=out)
    assert [c.line for c in counter.copies] == [SITES["experts-copy"].line]
    assert (moe.last_call.path, moe.last_call.finalize_copies) == ("output-alias", 0)
    assert rel_error(out, p.oracle()) < TOLERANCE[torch.bfloat16]


def test_bad_mode_is_a_config_error() -> None:
    with pytest.raises(MoEConfigError, match="mode must be one of"):
        ModularMoE(TorchExperts(), WorkspaceManager(), mode="fast")


def test_bad_output_shape_is_a_config_error() -> None:
    p = make_problem(35)
    with pytest.raises(MoEConfigError, match=r"output must have shape \(5, 64\)"):
        TorchExperts().apply(*p.args(), output=torch.empty(4, K, dtype=p.x.dtype))


def test_modular_kernel_checks_shapes() -> None:
    p = make_problem(38)
    moe = ModularMoE(TorchExperts(), WorkspaceManager(), mode="baseline")
    with pytest.raises(MoEConfigError, match="x must be \\[tokens, hidden\\]"):
        moe.apply(p.x.unsqueeze(0), p.w13, p.w2, p.weights, p.ids)
    with pytest.raises(MoEConfigError, match=r"output must have the input's shape \(5, 64\)"):
        moe.apply(*p.args(), output=torch.empty(5, 32, dtype=p.x.dtype))


def test_mismatched_dtypes_are_config_errors() -> None:
    p = make_problem(37)
    with pytest.raises(MoEConfigError, match="must share a dtype"):
        TorchExperts().apply(p.x.float(), p.w13, p.w2, p.weights, p.ids)
    with pytest.raises(MoEConfigError, match="topk_ids must be int32 or int64"):
        TorchExperts().apply(p.x, p.w13, p.w2, p.weights, p.ids.float())


def test_last_call_stats_are_per_thread() -> None:
    moe = ModularMoE(TorchExperts(), WorkspaceManager(), mode="fixed")
    p = make_problem(36)
    moe.apply(*p.args())
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(moe.last_call.path))
    thread.start()
    thread.join()
    assert moe.last_call.path == "output-alias" and seen == [""]
