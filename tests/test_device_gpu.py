"""Device capture on a real GPU (run on the device machine; skipped cleanly without a GPU)."""

from __future__ import annotations

import inspect

import pytest
import torch

from copyhunt.hunting import hunt

pytestmark = pytest.mark.gpu
M, K = 64, 3072


def _line() -> int:
    return inspect.currentframe().f_back.f_lineno  # type: ignore[union-attr]


def test_eager_copies_get_device_events_and_gpu_time() -> None:
    _check_eager_copies()


def test_eager_copies_join_after_earlier_profiler_sessions() -> None:
    # The order dependence of a full GPU run, inside one test: each earlier torch.profiler session in
    # the process (a plain one and device hunts) cost later sessions their first GPU records
    # (pytorch/pytorch#192021); the device capture launches warm-up kernels to absorb them.
    for _ in range(3):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]):
            torch.ones(8, device="cuda").add_(1)
        with hunt(device_trace=True):
            torch.ones(8, device="cuda").mul_(2)
    _check_eager_copies()


def _check_eager_copies() -> None:
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    c32 = torch.empty(M, K, device="cuda", dtype=torch.float32)
    torch.cuda.synchronize()
    with hunt(device_trace=True) as h:
        line_memcpy = _line() + 1
        b.copy_(a)  # contiguous, same dtype: a memcpy
        line_cast = _line() + 1
        c32.copy_(a)  # dtype cast: a copy kernel
        line_t = _line() + 1
        d = a.t().contiguous()  # noqa: F841 - non-contiguous source: clone -> copy kernel
    by_line = {c.site.line: c for c in h.copies if c.site is not None}
    mc, cast, tr = by_line[line_memcpy], by_line[line_cast], by_line[line_t]
    assert mc.device is not None and mc.device.name == "Memcpy DtoD (Device -> Device)"
    assert mc.device.bytes == M * K * 2  # 393216, from the memcpy event
    assert cast.device is not None and "copy_kernel" in cast.device.name and cast.device.bytes == M * K * 4
    assert tr.device is not None and "copy_kernel" in tr.device.name
    gpu = h.trace.meta.gpu_time_us
    assert gpu is not None and gpu >= mc.device.time_us + cast.device.time_us + tr.device.time_us > 0
    assert h.trace.meta.device_join["joined"] == 3


def test_graph_with_two_copies_replayed_three_times_gives_six_copies_at_two_lines() -> None:
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(K, K, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(M, K, device="cuda", dtype=torch.bfloat16)
    out32 = torch.empty(M, K, device="cuda", dtype=torch.float32)
    lines: dict[str, int] = {}

    def body() -> None:
        y = torch.relu(x @ w)
        lines["a"] = _line() + 1
        out.copy_(y)  # memcpy node
        z = out * 2
        lines["b"] = _line() + 1
        out32.copy_(z)  # copy-kernel node
        torch.sigmoid(out32)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        body()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with hunt(device_trace=True) as h:
        with torch.cuda.graph(g):
            body()
        for _ in range(3):
            g.replay()
    replays = [c for c in h.copies if c.origin == "graph-replay"]
    assert sorted((c.site.line, c.graph_replay) for c in replays if c.site is not None) == [
        (lines["a"], 0), (lines["a"], 1), (lines["a"], 2), (lines["b"], 0), (lines["b"], 1), (lines["b"], 2)
    ]
    assert all(c.device is not None and c.device.time_us > 0 for c in replays)


def test_moe_demo_baseline_copies_have_device_time_and_fixed_has_none() -> None:
    from copyhunt_moe import copy_sites, demo

    sites = {(s.file, s.line) for s in copy_sites().values()}
    counts = {}
    for path in ("baseline", "fixed"):
        getattr(demo, path)(layers=2, tokens=8)  # warm-up: Triton compiles outside the hunt
        with hunt(device_trace=True, focus=("*/copyhunt_moe/*",)) as h:
            getattr(demo, path)(layers=2, tokens=8)
        at = [c for c in h.copies if c.site is not None and (c.site.file, c.site.line) in sites]
        assert all(c.device is not None and c.device.time_us > 0 for c in at)
        counts[path] = len(at)
    assert counts == {"baseline": 4, "fixed": 0}  # 2 layers x 2 output copies -> none


def test_cli_trace_saves_the_raw_trace_then_joins_device_events(tmp_path, monkeypatch) -> None:
    # `copyhunt trace` with a GPU: the raw trace is saved before the device join, then replaced by the
    # joined one (meta.pending empty, every GPU copy of the demo with device time, paths root-relative).
    from copyhunt.cli import main
    from copyhunt.tracefile import load

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "t.json"
    assert main(["trace", "copyhunt_moe.demo:baseline", "--device-trace", "-o", str(out)]) == 0
    trace = load(out)
    assert trace.meta.pending == () and trace.judged and trace.meta.device_join is not None
    from pathlib import Path

    from copyhunt_moe import copy_sites

    sites = {(Path(s.file).name, s.line) for s in copy_sites().values()}
    at = [c for c in trace.read_copies() if c.site is not None and (Path(c.site.file).name, c.site.line) in sites]
    assert at and all(c.device is not None and c.device.time_us > 0 for c in at)
    assert all(not c.site.file.startswith("/") for c in trace.copies if c.site is not None)
