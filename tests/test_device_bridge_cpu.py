"""The copyhunt#<seq> bridge inside a real hunt, on the CPU (the GPU join itself: test_device_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from copyhunt import kineto
from copyhunt.capture import device
from copyhunt.hunting import hunt


def test_hunt_opens_one_bridge_range_per_op(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # Pretend a GPU is there: the profiler then records CPU activity only, which is enough to see
    # the copyhunt#<seq> ranges the dispatch mode opens around every op (copies and the rest: a
    # device copy made inside a non-copy op joins to that op's range).
    monkeypatch.setattr(device, "gpu_available", lambda: True)
    a = torch.randn(16, 16)
    c = torch.empty(16, 16)
    with hunt(device_trace=True) as h:
        b = a.clone()  # noqa: F841
        c.copy_(a)
        d = a + 1  # noqa: F841
    assert [(x.seq, x.op) for x in h.copies] == [(0, "aten.clone.default"), (1, "aten.copy_.default")]
    assert [(o.seq, o.op) for o in h.trace.ops][2] == (2, "aten.add.Tensor")
    kt = kineto.load(h.trace.meta.kineto_trace)
    assert sorted(int(e.name.split("#")[1]) for e in kt.bridge) == [0, 1, 2]
    # Each range encloses the cpu_op of its own op (same thread): aten::clone, aten::copy_, aten::add.
    for e in kt.bridge:
        inner = [o.name for o in sorted(kt.cpu_ops, key=lambda o: o.ts) if o.tid == e.tid and e.ts <= o.ts and o.end <= e.end]
        assert inner[0] == ["aten::clone", "aten::copy_", "aten::add"][int(e.name.split("#")[1])]
    # No GPU events on the CPU: nothing joined, GPU time 0, copies untouched.
    assert h.trace.meta.gpu_time_us == 0 and all(x.device is None for x in h.copies)
    assert h.trace.meta.device_join["joined"] == 0
    # The hunt released its device capture: another one starts (a held one raises "already running").
    with device.DeviceCapture(trace_path=tmp_path / "again.json"):
        pass
