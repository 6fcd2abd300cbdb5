"""GPU-only capture behaviours (run on the device machine; skipped cleanly without a GPU)."""

from __future__ import annotations

import inspect

import pytest
import torch

import copyhunt
from copyhunt.hunting import hunt

pytestmark = pytest.mark.gpu


def here() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_cross_device_kinds_and_bytes() -> None:
    x = torch.ones(4, 6)  # 96 bytes of float32
    with hunt() as h:
        l1 = here(); g = x.to("cuda")  # fmt: skip
        l2 = here(); g.t().contiguous()  # fmt: skip
        l3 = here(); g.cpu()  # fmt: skip
    assert [(c.kind, c.bytes, c.site.line) for c in h.copies] == [("h2d", 96, l1), ("d2d", 96, l2), ("d2h", 96, l3)]
    assert h.copies[0].src_device == "cpu" and h.copies[0].dst_device.startswith("cuda")
    assert h.trace.meta.device.startswith("cuda:")


def test_copies_captured_in_a_cuda_graph_are_flagged() -> None:
    src = torch.ones(64, 64, device="cuda")
    dst = torch.empty(64, 64, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up outside the graph, as torch.cuda.graph requires
        dst.copy_(src)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with hunt() as h:
        eager_line = here(); dst.copy_(src * 2)  # fmt: skip
        with torch.cuda.graph(g):
            graph_line = here(); dst.copy_(src)  # fmt: skip
    g.replay()  # replays produce no dispatch events
    torch.cuda.synchronize()
    assert [(c.site.line, c.captured_in_graph) for c in h.copies] == [(eager_line, False), (graph_line, True)]
    assert [o.captured_in_graph for o in h.trace.ops if o.is_copy] == [False, True]
    assert torch.equal(dst, src)


def test_region_pushes_nvtx_without_error_and_results_are_identical() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 32).cuda()
    x = torch.randn(8, 32, device="cuda")
    with torch.inference_mode():
        ref = lin(x).t().contiguous()
        with hunt() as h, copyhunt.region("gpu_region"):
            got = lin(x).t().contiguous()
    assert torch.equal(ref, got)
    assert [c.region for c in h.copies] == ["gpu_region"]
