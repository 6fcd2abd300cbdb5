"""The AITER backend, driven by STAND-IN modules that mimic AITER's two destination-passing signatures.

Nothing here runs AMD's AITER or claims AMD results: the stand-ins compute with the pure-torch experts
and only reproduce the calling conventions (ROCm/aiter #4617's ``output=``; AITER da318d0's
thread-local ``output_buffer_override``; the older signature with neither).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import torch

from copyhunt_moe.aiter_experts import AiterExperts, check_aiter_package, detect_destination_mode, import_aiter_fused_moe
from copyhunt_moe.backends import backend_notes
from copyhunt_moe.errors import AiterImpostorError, BackendUnavailableError
from copyhunt_moe.modular import ModularMoE, copy_sites
from copyhunt_moe.reference import reference_experts
from copyhunt_moe.routing import route
from copyhunt_moe.testing import TOLERANCE, CopyCounter, poison_, rel_error
from copyhunt_moe.torch_experts import dense_experts
from copyhunt_moe.workspace import WorkspaceManager

SITES = copy_sites()
M, K, N, E = 6, 64, 32, 8


def _compute(x, w1, w2, topk_weight, topk_ids, expert_mask=None, out=None):
    """What AITER's fused_moe computes (global ids; expert_mask marks this rank's experts)."""
    expert_map = None
    if expert_mask is not None:
        expert_map = torch.where(expert_mask.bool(), expert_mask.cumsum(0) - 1, -1)
    return dense_experts(x, w1, w2, topk_weight, topk_ids.long(), expert_map=expert_map, output=out)


class StandInCall:
    """Records how the stand-in was called (ids dtype, kwargs) for the assertions."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []


def stand_in_output_kwarg() -> SimpleNamespace:
    """Stand-in for AITER with ROCm/aiter #4617: ``fused_moe(..., output=None)`` returns ``output``."""
    log = StandInCall()

    def fused_moe(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask=None, activation=None,
                  quant_type=None, *, output=None):
        log.calls.append(dict(ids_dtype=topk_ids.dtype, output=output))
        return _compute(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask, out=output)

    return SimpleNamespace(fused_moe=fused_moe, log=log)


def stand_in_override_context() -> SimpleNamespace:
    """Stand-in for AITER da318d0: a thread-local ``output_buffer_override(buf)`` context manager."""
    log = StandInCall()
    state = threading.local()
    hooks: dict[str, Any] = {}

    @contextlib.contextmanager
    def output_buffer_override(buf: torch.Tensor) -> Iterator[None]:
        previous = getattr(state, "buf", None)
        state.buf = buf
        try:
            yield
        finally:
            state.buf = previous

    def fused_moe(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask=None, activation=None,
                  quant_type=None):
        if "before" in hooks:
            hooks["before"]()
        buf = getattr(state, "buf", None)
        log.calls.append(dict(ids_dtype=topk_ids.dtype, override=buf))
        return _compute(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask, out=buf)

    return SimpleNamespace(fused_moe=fused_moe, output_buffer_override=output_buffer_override, log=log,
                           hooks=hooks)


def stand_in_old() -> SimpleNamespace:
    """Stand-in for AITER before either: always returns its own fresh ``moe_buf``."""

    def fused_moe(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask=None, activation=None,
                  quant_type=None):
        return _compute(hidden_states, w1, w2, topk_weight, topk_ids, expert_mask)

    return SimpleNamespace(fused_moe=fused_moe)


def make_problem(seed: int, ep: bool = False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=gen, dtype=torch.bfloat16)
    num_global = 2 * E if ep else E
    weights, ids = route(torch.randn(M, num_global, generator=gen), 2, scoring="sigmoid")
    w13 = torch.randn(E, 2 * N, K, generator=gen, dtype=torch.bfloat16) * K**-0.5
    w2 = torch.randn(E, K, N, generator=gen, dtype=torch.bfloat16) * N**-0.5
    expert_map = torch.cat([torch.arange(E), torch.full((E,), -1)]) if ep else None
    oracle = reference_experts(x.double(), w13.double(), w2.double(), weights, ids, expert_map=expert_map)
    return (x, w13, w2, weights, ids), expert_map, oracle


# ---- detection --------------------------------------------------------------------------------------


def test_detects_output_kwarg() -> None:
    mode, reason = detect_destination_mode(stand_in_output_kwarg())
    assert mode == "output-kwarg" and "#4617" in reason


def test_detects_override_context_on_the_module_or_the_package() -> None:
    assert detect_destination_mode(stand_in_override_context())[0] == "override-context"
    package = SimpleNamespace(output_buffer_override=stand_in_override_context().output_buffer_override)
    mode, reason = detect_destination_mode(stand_in_old(), package)
    assert mode == "override-context" and reason.startswith("aiter.output_buffer_override")


def test_old_signature_falls_back_to_copy_and_says_why() -> None:
    mode, reason = detect_destination_mode(stand_in_old())
    assert mode == "copy-fallback" and "no output= parameter and no output_buffer_override" in reason


def test_bare_kwargs_is_not_taken_for_an_output_parameter() -> None:
    # fused_moe(*args, **kwargs) would accept output= and silently ignore it.
    module = SimpleNamespace(fused_moe=lambda *args, **kwargs: None)
    assert detect_destination_mode(module)[0] == "copy-fallback"


def test_output_kwarg_wins_over_override_context() -> None:
    module = stand_in_output_kwarg()
    module.output_buffer_override = stand_in_override_context().output_buffer_override
    assert detect_destination_mode(module)[0] == "output-kwarg"


# ---- both destination-passing styles and the fallback through the modular kernel ---------------------


STAND_INS = {
    "output-kwarg": stand_in_output_kwarg,
    "override-context": stand_in_override_context,
    "copy-fallback": stand_in_old,
}


@pytest.mark.parametrize("style", list(STAND_INS))
@pytest.mark.parametrize("ep", [False, True], ids=["all-local", "ep"])
def test_fixed_path_per_style(style: str, ep: bool) -> None:
    backend = AiterExperts(module=STAND_INS[style]())
    assert backend.destination_mode == style
    assert backend.supports_destination is (style != "copy-fallback")
    moe = ModularMoE(backend, WorkspaceManager(), mode="fixed")
    args, expert_map, oracle = make_problem(40 + ep, ep=ep)
    out = poison_(torch.empty_like(args[0]))
    with CopyCounter() as counter:
        moe.apply(*args, expert_map=expert_map, output=out)
    copy_lines = [c.line for c in counter.copies if c.op == "aten.copy_.default"]
    if style == "copy-fallback":
        assert copy_lines == [SITES["experts-copy"].line]  # AITER's fresh result copied once, into output
    else:
        assert copy_lines == []  # AITER wrote into the caller's buffer
    assert moe.ignored_destination == 0
    assert rel_error(out, oracle) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("style", list(STAND_INS))
def test_baseline_path_copies_twice_like_vllm_0_19(style: str) -> None:
    module = STAND_INS[style]()
    moe = ModularMoE(AiterExperts(module=module), WorkspaceManager(), mode="baseline")
    args, _, oracle = make_problem(50)
    with CopyCounter() as counter:
        out = moe.apply(*args)
    copy_lines = [c.line for c in counter.copies if c.op == "aten.copy_.default"]
    assert copy_lines == [SITES["experts-copy"].line, SITES["finalize-copy"].line]
    assert rel_error(out, oracle) < TOLERANCE[torch.bfloat16]
    if style == "output-kwarg":
        assert module.log.calls[-1]["output"] is None  # baseline never hands AITER a destination


def test_ids_are_handed_to_aiter_as_int32() -> None:
    module = stand_in_output_kwarg()
    args, _, _ = make_problem(51)
    AiterExperts(module=module).apply(*args)
    assert module.log.calls[-1]["ids_dtype"] == torch.int32


def test_aiter_that_ignores_output_is_detected() -> None:
    module = stand_in_output_kwarg()
    honest = module.fused_moe
    module.fused_moe = lambda *a, output=None, **kw: honest(*a, **kw)  # accepts output=, ignores it
    moe = ModularMoE(AiterExperts(module=module), WorkspaceManager(), mode="fixed")
    args, _, oracle = make_problem(52)
    out = poison_(torch.empty_like(args[0]))
    moe.apply(*args, output=out)
    assert moe.ignored_destination == 1
    assert rel_error(out, oracle) < TOLERANCE[torch.bfloat16]


def test_notes_name_the_mode_and_reason() -> None:
    backend = AiterExperts(module=stand_in_old())
    notes = backend_notes(backend)
    assert notes[0] == "moe backend: aiter (destination passing: no)"
    assert notes[1].startswith("moe aiter destination mode: copy-fallback (installed AITER's fused_moe has no")
    assert backend.notes() == [notes[1]]


# ---- the thread-local override must not leak ---------------------------------------------------------


def test_override_does_not_leak_to_a_later_call() -> None:
    module = stand_in_override_context()
    backend = AiterExperts(module=module)
    args, _, oracle = make_problem(60)
    dest = poison_(torch.empty_like(args[0]))
    assert backend.apply(*args, output=dest) is dest
    snapshot = dest.clone()
    later = backend.apply(*args)  # no destination: AITER must allocate
    assert later is not dest and module.log.calls[-1]["override"] is None
    assert torch.equal(dest, snapshot) and rel_error(later, oracle) < TOLERANCE[torch.bfloat16]


def test_override_is_reset_when_aiter_raises_and_the_error_propagates() -> None:
    module = stand_in_override_context()
    backend = AiterExperts(module=module)
    args, _, _ = make_problem(61)
    dest = torch.empty_like(args[0])
    module.hooks["before"] = lambda: (_ for _ in ()).throw(RuntimeError("kernel failed"))
    with pytest.raises(RuntimeError, match="kernel failed"):
        backend.apply(*args, output=dest)
    del module.hooks["before"]
    assert backend.apply(*args) is not dest


def test_override_does_not_leak_to_another_thread() -> None:
    module = stand_in_override_context()
    backend = AiterExperts(module=module)
    args_a, _, oracle_a = make_problem(62)
    args_b, _, oracle_b = make_problem(63)
    dest_a = poison_(torch.empty_like(args_a[0]))
    inside_a, b_done = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def pause_in_a() -> None:
        if threading.current_thread().name == "A":
            inside_a.set()
            assert b_done.wait(10)

    module.hooks["before"] = pause_in_a

    def run_a() -> None:
        results["a"] = backend.apply(*args_a, output=dest_a)

    thread = threading.Thread(target=run_a, name="A")
    thread.start()
    assert inside_a.wait(10)  # thread A is inside the override, mid-call
    results["b"] = backend.apply(*args_b)  # this thread, no destination
    b_done.set()
    thread.join(10)
    assert results["a"] is dest_a
    assert results["b"] is not dest_a
    assert rel_error(dest_a, oracle_a) < TOLERANCE[torch.bfloat16]
    assert rel_error(results["b"], oracle_b) < TOLERANCE[torch.bfloat16]


def test_the_leak_check_catches_a_process_global_override() -> None:
    # The checks above must be able to fail: an override kept in a module global (not thread-local,
    # not reset) makes a later call without destination write into the previous caller's buffer.
    module = stand_in_old()
    holder: dict[str, torch.Tensor | None] = {"buf": None}

    def leaky_override(buf: torch.Tensor) -> contextlib.AbstractContextManager:
        holder["buf"] = buf  # set and never reset
        return contextlib.nullcontext()

    module.fused_moe = lambda *a, **kw: _compute(*a, **kw, out=holder["buf"])
    module.output_buffer_override = leaky_override
    backend = AiterExperts(module=module)
    args, _, _ = make_problem(64)
    dest = torch.empty_like(args[0])
    backend.apply(*args, output=dest)
    assert backend.apply(*args) is dest  # the leak the real tests guard against


# ---- import: ROCm only, and never the PyPI asyncio impostor -------------------------------------------


def _fake_package(root: Path, with_fused_moe: bool) -> None:
    pkg = root / "aiter"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("async def aiter_map(f, it):\n    pass\n")  # asyncio-flavoured
    if with_fused_moe:
        (pkg / "fused_moe.py").write_text("def fused_moe(*args, **kwargs):\n    raise RuntimeError\n")


@pytest.fixture
def isolated_aiter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [m for m in sys.modules if m == "aiter" or m.startswith("aiter.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def test_pypi_asyncio_aiter_is_refused_as_an_impostor(isolated_aiter: Path) -> None:
    _fake_package(isolated_aiter, with_fused_moe=False)
    with pytest.raises(AiterImpostorError, match="has no aiter.fused_moe: not AMD's AITER.*amd-aiter"):
        import_aiter_fused_moe()
    assert "aiter" not in sys.modules  # refused without importing the impostor


def test_single_file_aiter_module_is_an_impostor(isolated_aiter: Path) -> None:
    (isolated_aiter / "aiter.py").write_text("x = 1\n")
    with pytest.raises(AiterImpostorError, match="single module"):
        check_aiter_package()


@pytest.mark.skipif(getattr(torch.version, "hip", None) is not None, reason="this test wants a non-ROCm torch")
def test_amd_layout_on_non_rocm_torch_is_unavailable(isolated_aiter: Path) -> None:
    _fake_package(isolated_aiter, with_fused_moe=True)
    assert check_aiter_package() == isolated_aiter / "aiter"
    with pytest.raises(BackendUnavailableError, match="needs a ROCm build of torch"):
        import_aiter_fused_moe()


def test_fallback_is_said_in_the_trace_notes() -> None:
    # Issue 7: when AITER cannot take the caller's buffer, the trace's metadata says so.
    import copyhunt

    moe = ModularMoE(AiterExperts(module=stand_in_old()), WorkspaceManager(), mode="fixed")
    args, _, _ = make_problem(53)
    with copyhunt.hunt() as h:
        moe.apply(*args)
    notes = [n for n in h.trace.meta.notes if n.startswith("moe ")]
    assert notes[0] == "moe backend: aiter (destination passing: no)"
    assert notes[1].startswith("moe aiter destination mode: copy-fallback (")
    # A backend that ran before the hunt (and not during it) is not reported.
    moe2 = ModularMoE(AiterExperts(module=stand_in_output_kwarg()), WorkspaceManager(), mode="fixed")
    moe2.apply(*args)
    with copyhunt.hunt() as h2:
        moe.apply(*args)
    assert not any("output-kwarg" in n for n in h2.trace.meta.notes)
