"""Regenerate traces/moe-{baseline,fixed}-cpu.json: the bundled MoE demo traced on the CPU.

    python traces/make_moe_cpu_traces.py        (from the repository root)

Runs ``copyhunt trace copyhunt_moe.demo:<mode> --no-device-trace`` (tiny preset, 4 layers, 4 tokens:
the demo's CPU defaults) from the repository root. The runner records paths relative to the project
root (repository files) or as import paths (``torch/...``), so the stored trace carries no machine path
and CI checks it from any checkout (`copyhunt gate traces/moe-fixed-cpu.json --budget copyhunt.toml`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from copyhunt.cli import main
from copyhunt.records import Trace
from copyhunt.tracefile import load, save

ROOT = Path(__file__).resolve().parent.parent


def portable(trace: Trace) -> Trace:
    """The trace as stored in the repository: its paths are already relative to the repository root
    (the runner records them so); the root itself, a path on the machine that traced, becomes "."."""
    return dataclasses.replace(trace, meta=dataclasses.replace(trace.meta, root="."))


def make(mode: str) -> Path:
    """Trace one demo mode and store it as traces/moe-<mode>-cpu.json."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        os.chdir(ROOT)  # the repository is the project root: its files are recorded relative to it
        code = main(["trace", f"copyhunt_moe.demo:{mode}", "--no-device-trace", "-o", str(raw)])
        if code != 0:
            raise SystemExit(f"copyhunt trace exited {code}")
        trace = portable(load(raw))
    return save(trace, ROOT / "traces" / f"moe-{mode}-cpu.json", overwrite=True)


if __name__ == "__main__":
    os.environ.setdefault("COPYHUNT_MOE_DEVICE", "cpu")
    for m in ("baseline", "fixed"):
        print(f"wrote {make(m)}", file=sys.stderr)
