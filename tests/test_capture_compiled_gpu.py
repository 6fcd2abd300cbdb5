"""torch.compile on a GPU under a hunt: Inductor's Triton kernels joined to the copies they run (device time).

Run on the device machine (``benchmarks/gpu_compile.sh`` runs these); skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch

import copyhunt

pytestmark = pytest.mark.gpu


def program(x: torch.Tensor, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    buf.copy_(x)  # a copy into a mutated input
    k = x.t().contiguous()  # returned as it is: a copy kernel of its own
    return k, (x * 2).sum(0)


@pytest.fixture(scope="module")
def traced() -> dict:
    x = torch.randn(2048, 2048, device="cuda")
    torch._dynamo.reset()
    plain = torch.compile(program)
    ref_buf = torch.zeros_like(x)
    ref = plain(x, ref_buf)
    torch._dynamo.reset()
    compiled = torch.compile(program)
    buf = torch.zeros_like(x)
    with copyhunt.hunt(device_trace=True) as h:
        for _ in range(3):
            out = compiled(x, buf)
        torch.cuda.synchronize()
    return {"ref": (ref, ref_buf), "out": (out, buf), "trace": h.trace}


def test_outputs_identical_with_and_without_the_hunt(traced: dict) -> None:
    (ref, ref_buf), (out, buf) = traced["ref"], traced["out"]
    assert all(torch.equal(a, b) for a, b in zip(ref, out)) and torch.equal(ref_buf, buf)


def test_copy_kernels_carry_their_triton_kernel_and_device_time(traced: dict) -> None:
    compiled = [c for c in traced["trace"].read_copies() if c.origin == "compiled"]
    clones = [c for c in compiled if c.op == "aten.clone.default"]
    assert len(clones) == 3  # one per execution
    for c in clones:
        info = c.compiled
        assert info.how == "kernel" and info.kernels and info.kernels[0].startswith("triton_")
        assert c.device is not None and c.device.name == info.kernels[0] and c.device.time_us > 0
        assert c.bytes == 2048 * 2048 * 4
    copies_in = [c for c in compiled if c.op == "aten.copy_.default"]
    assert len(copies_in) == 3 and all(c.compiled.mutates_input for c in copies_in)
    # Every compiled record of one execution joined inside that execution's range, none elsewhere.
    assert traced["trace"].meta.compiled.device_events_joined >= 3
    assert not [c for c in traced["trace"].copies if c.origin == "device"]
