"""The hunt's mode switches Dynamo's frame hook off inside ``__torch_dispatch__`` itself.

Torch wraps every TorchDispatchMode's ``__torch_dispatch__`` in ``torch._disable_dynamo`` so that a
torch.compile'd caller never makes Dynamo compile the mode's own Python. copyhunt's mode opts out of
that wrapper (two Python frames per op) and does the same switch itself (capture/dispatch.py,
``_OWN_DYNAMO_SWITCH``). The case that needs it: a compiled function calls a helper that Dynamo runs
eagerly (a graph break in it, no tensor in its frame); the helper's ops reach the mode while Dynamo's
hook is still on for nested frames.
"""

from __future__ import annotations

import pytest
import torch

import copyhunt
from copyhunt.capture import dispatch

G = torch.randn(4)


def _helper() -> torch.Tensor:
    print("", end="")  # a graph break: Dynamo runs this frame eagerly, its hook still on for callees
    return G.exp() * 2


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.sin() + _helper()


def _hooks_seen_in_mode(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Dynamo's frame hook as the mode sees it for each new op (``classify`` runs inside the mode)."""
    seen: list[object] = []
    classify = dispatch.classify

    def spy(func: object) -> object:
        seen.append(torch._C._dynamo.eval_frame.get_eval_frame_callback())
        return classify(func)

    monkeypatch.setattr(dispatch, "classify", spy)
    torch._dynamo.reset()
    compiled = torch.compile(_f, backend="eager")
    x = torch.randn(4)
    with copyhunt.hunt():
        out = compiled(x)
    torch.testing.assert_close(out, x.sin() + G.exp() * 2)
    return seen


@pytest.mark.skipif(not dispatch._OWN_DYNAMO_SWITCH, reason="this torch has no per-mode opt-out: torch's wrapper runs")
def test_mode_runs_with_dynamo_hook_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dispatch._Mode._should_skip_dynamo() is False  # torch's wrapper is not applied...
    assert "_disable_dynamo" not in repr(dispatch._Mode.__dict__["__torch_dispatch__"])
    seen = _hooks_seen_in_mode(monkeypatch)
    assert len(seen) == 4  # each op overload is classified once: sin, exp, mul (the helper's), add
    assert seen == [None] * 4  # ...and the hook is off for every op all the same


@pytest.mark.skipif(not dispatch._OWN_DYNAMO_SWITCH, reason="this torch has no per-mode opt-out: torch's wrapper runs")
def test_without_the_switch_dynamo_would_see_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The case above is one where the hook is on: with the switch removed the mode sees it."""
    monkeypatch.setattr(dispatch, "_set_eval_frame", lambda callback: None)
    seen = _hooks_seen_in_mode(monkeypatch)
    assert any(s is not None for s in seen)
