"""Where the full hunt's per-op time goes: the overhead loop with one part of the recorder stubbed at a time.

    PYTHONPATH=. python benchmarks/overhead_breakdown.py [--ops 4000] [--repeats 7]

Rows (fastest of the interleaved repeats, x the bare no-op TorchDispatchMode): ``glue`` (the mode,
plans and sequence numbers; nothing recorded), ``no accesses`` (every op recorded without its
storage accesses), ``no site`` (accesses without the site search), ``full`` (the real hunt). A
measuring aid for benchmarks/RESULTS.md; the stubbed hunts give wrong records on purpose.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).parent))
from overhead import BareMode, make_loop  # noqa: E402

import copyhunt  # noqa: E402
from copyhunt.capture import dispatch  # noqa: E402


def _glue(cap: Any) -> None:
    cap.record = lambda *a: None


def _no_accesses(cap: Any) -> None:
    class Plans(dict):  # type: ignore[type-arg]
        def get(self, f: Any, d: Any = None) -> Any:
            p = dict.get(self, f)
            if p is None:
                p = dispatch.classify(f) or dispatch.make_plan(f, dispatch.COPY_OPS.get(f))
                if type(p) is dispatch.Plan:
                    p = p._replace(args=(), skip_outputs=True)
                self[f] = p
            return p

    cap._plans = Plans()


def _no_site(cap: Any) -> None:
    cap.recorder._live_site = lambda f: None


def main(argv: list[str] | None = None) -> int:
    """Print the breakdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    loop, ops = make_loop(a.ops)
    loop()
    with copyhunt.hunt():
        loop()

    def timed(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) / ops * 1e6

    def hunted(patch: Callable[[Any], None] | None) -> float:
        h = copyhunt.hunt()
        h.start()
        if patch is not None:
            patch(h._capture)
        try:
            return timed(loop)
        finally:
            h.stop()

    rows: dict[str, list[float]] = {"bare": [], "glue": [], "no accesses": [], "no site": [], "full": []}
    patches = {"glue": _glue, "no accesses": _no_accesses, "no site": _no_site, "full": None}
    for _ in range(a.repeats):
        with BareMode():
            rows["bare"].append(timed(loop))
        for name, patch in patches.items():
            rows[name].append(hunted(patch))
    bare = min(rows["bare"])
    print(f"{'configuration':<14}{'us/op':>8}{'x bare':>8}")
    for name, ts in rows.items():
        print(f"{name:<14}{min(ts):>8.2f}{min(ts) / bare:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
