"""Capture small real Kineto Chrome traces on a GPU: the parsing fixtures for copyhunt's device join.

Run on a CUDA (or ROCm) machine: ``python traces/capture_torch_fixtures.py OUTDIR``.
Each scenario is one torch.profiler session around a tiny torch-only program (warmed up first, so
lazy initialisation stays out of the trace). Writes ``OUTDIR/<scenario>.json`` Chrome traces and
``OUTDIR/index.json`` with the torch/CUDA versions, the device and the source lines of each copy.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

DEV = "cuda"
M, K = 64, 3072  # one MoE output slice: 64 tokens x 3072 hidden, bf16 = 393216 bytes


def _line() -> int:
    """Line number of the caller: recorded so tests can check attribution against real lines."""
    return inspect.currentframe().f_back.f_lineno  # type: ignore[union-attr]


LINES: dict[str, dict[str, int]] = {}


def d2d_contiguous() -> None:
    a = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    b = torch.empty_like(a)
    LINES["d2d_contiguous"] = {"copy_": _line() + 1}
    b.copy_(a)


def dtype_cast() -> None:
    a = torch.randn(M, K, device=DEV, dtype=torch.float32)
    b = torch.empty(M, K, device=DEV, dtype=torch.bfloat16)
    LINES["dtype_cast"] = {"copy_": _line() + 1, "to": _line() + 2}
    b.copy_(a)
    c = a.to(torch.bfloat16)  # noqa: F841


def non_contiguous() -> None:
    a = torch.randn(K, M, device=DEV, dtype=torch.bfloat16)
    LINES["non_contiguous"] = {"contiguous": _line() + 1, "copy_": _line() + 3}
    b = a.t().contiguous()
    c = torch.empty(M, K, device=DEV, dtype=torch.bfloat16)
    c.copy_(a.t())
    del b


def clone_cat() -> None:
    a = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    LINES["clone_cat"] = {"clone": _line() + 1, "cat": _line() + 2}
    b = a.clone()
    c = torch.cat([a, b])  # noqa: F841


def host_device() -> None:
    h = torch.randn(M, K, dtype=torch.bfloat16)
    hp = h.pin_memory()
    LINES["host_device"] = {"h2d": _line() + 1, "h2d_pinned": _line() + 2, "d2h": _line() + 3}
    d = h.to(DEV)
    d2 = hp.to(DEV, non_blocking=True)  # noqa: F841
    back = d.cpu()  # noqa: F841


def bridge_record_function() -> None:
    """The seq bridge candidate: a record_function named copyhunt#<seq> around each copy."""
    a = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    b = torch.empty_like(a)
    c = torch.empty(M, K, device=DEV, dtype=torch.float32)
    LINES["bridge_record_function"] = {"copy_7": _line() + 2, "copy_8": _line() + 4}
    with record_function("copyhunt#7"):
        b.copy_(a)
    with record_function("copyhunt#8"):
        c.copy_(a)


def _graph_setup() -> tuple[torch.cuda.CUDAGraph, Callable[[], None], dict[str, int]]:
    x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(K, K, device=DEV, dtype=torch.bfloat16)
    out = torch.empty(M, K, device=DEV, dtype=torch.bfloat16)
    out32 = torch.empty(M, K, device=DEV, dtype=torch.float32)
    lines: dict[str, int] = {}

    def body() -> None:
        y = x @ w
        y = torch.relu(y)
        lines["copy_a"] = _line() + 1
        out.copy_(y)  # contiguous, same dtype: a memcpy node (or memcpy128 kernel)
        z = out * 2
        lines["copy_b"] = _line() + 1
        out32.copy_(z)  # dtype cast: a copy kernel node
        torch.sigmoid(out32)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            body()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    return g, body, lines


def graph_capture_and_replay() -> None:
    """Profiler active across capture and 3 replays: 2 copies captured, 6 executed."""
    g, body, lines = _graph_setup()
    LINES["graph_capture_and_replay"] = lines
    with torch.cuda.graph(g):
        body()
    for _ in range(3):
        g.replay()


_GRAPH_FOR_REPLAY_ONLY: list[Any] = []


def graph_replay_only_setup() -> None:
    g, body, lines = _graph_setup()
    LINES["graph_replay_only"] = lines
    with torch.cuda.graph(g):
        body()
    torch.cuda.synchronize()
    _GRAPH_FOR_REPLAY_ONLY.append(g)


def graph_replay_only() -> None:
    for _ in range(3):
        _GRAPH_FOR_REPLAY_ONLY[0].replay()


SCENARIOS: dict[str, Callable[[], None]] = {
    "d2d_contiguous": d2d_contiguous,
    "dtype_cast": dtype_cast,
    "non_contiguous": non_contiguous,
    "clone_cat": clone_cat,
    "host_device": host_device,
    "bridge_record_function": bridge_record_function,
    "graph_capture_and_replay": graph_capture_and_replay,
}


def run(name: str, fn: Callable[[], None], out: Path, **prof_kw: Any) -> dict[str, Any]:
    fn()  # warm-up: kernels loaded, allocator primed
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], **prof_kw) as prof:
        fn()
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    path = out / f"{name}.json"
    prof.export_chrome_trace(str(path))
    ev = []
    for e in prof.events():
        if e.kernels or "copy" in e.name or e.name.startswith("copyhunt#"):
            ev.append({"name": e.name, "id": e.id, "kernels": [k.name for k in e.kernels], "stack": list(e.stack)[:4]})
    return {"file": path.name, "wall_s": round(wall, 4), "events": ev[:40]}


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_fixtures")
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "device": torch.cuda.get_device_name(0),
        "graph_sig": str(inspect.signature(torch.cuda.graph.__init__)),
        "has_enable_annotations": "enable_annotations" in str(inspect.signature(torch.cuda.graph.__init__)),
        "scenarios": {},
    }
    for name, fn in SCENARIOS.items():
        try:
            index["scenarios"][name] = run(name, fn, out)
        except Exception:  # fixture capture: record and carry on with the others
            index["scenarios"][name] = {"error": traceback.format_exc()}
    try:
        graph_replay_only_setup()
        index["scenarios"]["graph_replay_only"] = run("graph_replay_only", graph_replay_only, out)
    except Exception:
        index["scenarios"]["graph_replay_only"] = {"error": traceback.format_exc()}
    # Stack variants on two scenarios: with_stack alone, and with the verbose experimental config.
    for name in ("d2d_contiguous", "dtype_cast"):
        try:
            index["scenarios"][f"{name}__stack"] = run(f"{name}__stack", SCENARIOS[name], out, with_stack=True)
            cfg = torch._C._profiler._ExperimentalConfig(verbose=True)
            index["scenarios"][f"{name}__stack_verbose"] = run(
                f"{name}__stack_verbose", SCENARIOS[name], out, with_stack=True, experimental_config=cfg
            )
        except Exception:
            index["scenarios"][f"{name}__stack"] = {"error": traceback.format_exc()}
    try:
        index["scenarios"]["graph_capture_and_replay__stack"] = run(
            "graph_capture_and_replay__stack", graph_capture_and_replay, out, with_stack=True
        )
    except Exception:
        index["scenarios"]["graph_capture_and_replay__stack"] = {"error": traceback.format_exc()}
    index["lines"] = LINES
    index["source_file"] = __file__
    (out / "index.json").write_text(json.dumps(index, indent=1))
    for name, r in index["scenarios"].items():
        print(name, "ERROR" if "error" in r else r.get("wall_s"))
        if "error" in r:
            print(r["error"][-600:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
