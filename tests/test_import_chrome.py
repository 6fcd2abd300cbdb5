"""Import real torch.profiler Chrome traces (H200, torch 2.11 + CUDA 13.0) into copyhunt records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from copyhunt.errors import TraceFormatError
from copyhunt.importers import load_any
from copyhunt.attribution import KinetoSiteRule, attribute, is_kineto_library_frame
from copyhunt.records import Frame
from copyhunt.tracefile import save

FIX = Path(__file__).resolve().parent.parent / "traces" / "kineto-h200"


def test_graph_replays_imported_with_function_level_sites() -> None:
    # The program captured a graph holding 2 copies (lines 97 and 100 of body(), defined at line 93),
    # after 2 eager warm-up runs of body(): 2 x 2 eager copies + 2 copies x 3 replays = 10 copies.
    t = load_any(FIX / "graph_capture_and_replay__stack.json.gz")
    assert len(t.copies) == 10
    assert [c.graph_replay for c in t.copies] == [None] * 4 + [0, 0, 1, 1, 2, 2]
    # Kineto's python_function events carry the function's first line (93), not the call line.
    assert {c.site for c in t.copies} == {Frame("capture_torch_fixtures.py", 93, "body")}
    assert any("function-level" in n for n in t.meta.notes)
    # Memcpy nodes carry bytes (64*3072*2 = 393216); copy kernels have none without record_shapes.
    assert [c.bytes for c in t.copies] == [393216, 0] * 5
    assert [t.timings[i].name for i in (0, 1)] == ["Memcpy DtoD (Device -> Device)", "direct_copy_kernel_cuda"]
    assert t.meta.device == "cuda:0 NVIDIA H200"
    assert all(c.origin == "imported" for c in t.copies)


def test_no_stacks_says_so_and_keeps_ops_and_kinds() -> None:
    t = load_any(FIX / "host_device.json.gz")
    assert [(c.op, c.kind, c.bytes) for c in t.copies] == [
        ("aten::copy_", "h2d", 393216), ("aten::copy_", "h2d", 393216), ("aten::copy_", "d2h", 393216)
    ]
    assert all(c.site is None for c in t.copies)
    assert any("no Python stacks" in n for n in t.meta.notes)
    assert any("verdicts" in n for n in t.meta.notes)
    # GPU time: the three memcpys are the only GPU events (randn ran on the CPU): 10.016 + 15.488 + 8.736.
    assert t.meta.gpu_time_us == pytest.approx(34.24)


def test_regions_from_record_function_ranges() -> None:
    t = load_any(FIX / "bridge_record_function.json.gz")
    # The copies ran inside record_function("copyhunt#7") / ("copyhunt#8"): the bridge names are
    # copyhunt's own and are not user regions, so they are kept out of 'region'.
    assert [c.region for c in t.copies] == [None, None]
    assert [c.kind for c in t.copies] == ["d2d", "d2d"]


def test_cpu_only_chrome_trace(tmp_path: Path) -> None:
    p = tmp_path / "cpu.json"
    p.write_text(json.dumps({"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::copy_", "ts": 1, "dur": 2, "pid": 1, "tid": 1}]}))
    t = load_any(p)
    assert t.copies == () and t.meta.device == "cpu"
    assert any("no GPU activity" in n for n in t.meta.notes)


def test_load_any_reads_copyhunt_traces_and_rejects_foreign_json(tmp_path: Path) -> None:
    t = load_any(FIX / "d2d_contiguous.json.gz")
    saved = save(t, tmp_path / "t.json")
    again = load_any(saved)
    assert again.copies == t.copies and again.timings == t.timings
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(TraceFormatError, match="not a copyhunt trace, torch.profiler Chrome trace or rocprofv3"):
        load_any(tmp_path / "x.json")
    bad = tmp_path / "t.json.gz"
    bad.write_bytes(gzip.compress(b'{"traceEvents": [')[:-4])
    with pytest.raises(TraceFormatError):
        load_any(bad)


def test_library_frames() -> None:
    assert is_kineto_library_frame("torch/cuda/__init__.py") and is_kineto_library_frame("<built-in method copy_>")
    assert is_kineto_library_frame("inspect.py") and is_kineto_library_frame("copyhunt/capture/device.py")
    assert not is_kineto_library_frame("model.py") and not is_kineto_library_frame("copyhunt_moe/modular.py")
    # The one chooser: the short stack starts at the site, as for live frames.
    stack = [Frame("torch/nn/modules/module.py", 1, "_call_impl"), Frame("model.py", 7, "forward"), Frame("run.py", 2, "main")]
    assert attribute(stack, KinetoSiteRule(), 8) == (Frame("model.py", 7, "forward"), tuple(stack[1:]))
    assert attribute(stack, KinetoSiteRule(hide=["model.py"]), 1) == (Frame("run.py", 2, "main"), (stack[2],))


def test_rocm_style_chrome_trace_synthetic(tmp_path: Path) -> None:
    # SYNTHETIC (no AMD GPU here): a ROCm build's Kineto uses the same categories with HIP runtime
    # names; a d2d copy may run as the blit kernel __amd_rocclr_copyBuffer.
    ev = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::copy_", "ts": 10, "dur": 20, "pid": 1, "tid": 1, "args": {"External id": 5}},
        {"ph": "X", "cat": "cuda_runtime", "name": "hipMemcpyWithStream", "ts": 12, "dur": 3, "pid": 1, "tid": 1,
         "args": {"External id": 5, "correlation": 50}},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "ts": 16, "dur": 2, "pid": 2, "tid": 3,
         "args": {"External id": 5, "correlation": 50, "bytes": 4096, "device": 0, "stream": 3}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::clone", "ts": 40, "dur": 20, "pid": 1, "tid": 1, "args": {"External id": 6}},
        {"ph": "X", "cat": "cuda_runtime", "name": "hipExtModuleLaunchKernel", "ts": 42, "dur": 3, "pid": 1, "tid": 1,
         "args": {"External id": 6, "correlation": 60}},
        {"ph": "X", "cat": "kernel", "name": "__amd_rocclr_copyBuffer", "ts": 46, "dur": 4, "pid": 2, "tid": 3,
         "args": {"External id": 6, "correlation": 60, "device": 0, "stream": 3}},
    ]
    p = tmp_path / "rocm.json"
    p.write_text(json.dumps({"traceEvents": ev}))
    t = load_any(p)
    assert [(c.op, c.kind, c.bytes, c.device.time_us if c.device else None) for c in t.read_copies()] == [
        ("aten::copy_", "d2d", 4096, 2.0), ("aten::clone", "d2d", 0, 4.0)
    ]
    assert t.meta.device == "rocm" and t.meta.gpu_time_us == 6.0
