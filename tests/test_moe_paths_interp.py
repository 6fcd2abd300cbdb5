"""Both modular paths with the Triton backend, under TRITON_INTERPRET=1 on the CPU (fp32 and fp16).

The interpreter must be on before triton's ``@jit`` decorators run and another test module may already
have imported the kernels compiled, so the cases run in ONE child process (this file as a script with
TRITON_INTERPRET=1) and the tests check its JSON. The interpreter reads bf16 wrongly: bf16 is checked on
the GPU (tests/test_moe_gpu.py). Bounds (||out - ref|| / ||ref||, float64 reference): fp32 1e-4,
fp16 5e-3 (one more fp16 rounding of the weighted expert outputs than the reference).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("triton")

BOUND = {"float32": 1e-4, "float16": 5e-3}
CASES = [(mode, dtype, ep) for mode in ("baseline", "fixed") for dtype in ("float32", "float16") for ep in (False, True)]


def _child() -> list[dict[str, Any]]:
    import torch

    from copyhunt_moe.modular import ModularMoE, copy_sites
    from copyhunt_moe.reference import reference_experts
    from copyhunt_moe.routing import route
    from copyhunt_moe.testing import CopyCounter, poison_, rel_error
    from copyhunt_moe.triton_experts import TritonExperts
    from copyhunt_moe.workspace import WorkspaceManager

    modular_file = copy_sites()["experts-copy"].file
    results = []
    for i, (mode, dtype_name, ep) in enumerate(CASES):
        dtype = getattr(torch, dtype_name)
        gen = torch.Generator().manual_seed(100 + i)
        M, K, N, E = 7, 64, 32, 4
        num_global = 2 * E if ep else E
        x = torch.randn(M, K, generator=gen, dtype=dtype)
        weights, ids = route(torch.randn(M, num_global, generator=gen), 2, scoring="sigmoid")
        w13 = torch.randn(E, 2 * N, K, generator=gen, dtype=dtype) * K**-0.5
        w2 = torch.randn(E, K, N, generator=gen, dtype=dtype) * N**-0.5
        expert_map = torch.cat([torch.full((E,), -1), torch.arange(E)]) if ep else None
        ws = WorkspaceManager()
        poison_(ws.get((M, K), dtype, "cpu"))
        out = poison_(torch.empty_like(x))
        moe = ModularMoE(TritonExperts(), ws, mode=mode)
        with CopyCounter() as counter:
            moe.apply(x, w13, w2, weights, ids, expert_map=expert_map, output=out)
        ref = reference_experts(x.double(), w13.double(), w2.double(), weights, ids, expert_map=expert_map)
        results.append(dict(
            mode=mode, dtype=dtype_name, ep=ep, err=rel_error(out, ref), path=moe.last_call.path,
            # Only the modular kernel's own lines: the interpreter moves kernel arguments to and from
            # the host with copies of its own, which a GPU run does not make.
            modular_copies=[c.line for c in counter.copies if c.file == modular_file],
        ))
    return results


@pytest.fixture(scope="module")
def child_results() -> list[dict[str, Any]]:
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.triton_interpret
@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{m}-{d}-{'ep' if e else 'local'}" for m, d, e in CASES])
def test_triton_backend_through_both_paths(child_results: list[dict[str, Any]], index: int) -> None:
    from copyhunt_moe.modular import copy_sites

    sites = copy_sites()
    r = child_results[index]
    assert r["err"] < BOUND[r["dtype"]], r
    if r["mode"] == "baseline":
        assert (r["path"], r["modular_copies"]) == ("workspace", [sites["experts-copy"].line, sites["finalize-copy"].line])
    else:
        assert (r["path"], r["modular_copies"]) == ("output-alias", [])


if __name__ == "__main__":
    print(json.dumps(_child()))
