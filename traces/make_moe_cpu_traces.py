"""Regenerate traces/moe-{baseline,fixed}-cpu.json: the bundled MoE demo traced on the CPU.

    python traces/make_moe_cpu_traces.py        (from the repository root)

Runs ``copyhunt trace copyhunt_moe.demo:<mode> --no-device-trace`` (tiny preset, 4 layers, 4 tokens:
the demo's CPU defaults) and stores the trace with paths relative to the repository root, so that CI
checks it from any checkout (`copyhunt gate traces/moe-fixed-cpu.json --budget copyhunt.toml`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from copyhunt.cli import main
from copyhunt.records import Frame, Trace
from copyhunt.tracefile import load, save

ROOT = Path(__file__).resolve().parent.parent


def _rel(frame: Frame | None) -> Frame | None:
    if frame is None or not os.path.isabs(frame.file):
        return frame
    try:
        return dataclasses.replace(frame, file=Path(frame.file).relative_to(ROOT).as_posix())
    except ValueError:  # torch or the standard library: not ours to rewrite
        return frame


def relative_paths(trace: Trace) -> Trace:
    """The trace with every site and stack frame under ROOT made repo-relative."""
    copies = [dataclasses.replace(c, site=_rel(c.site), stack=tuple(_rel(f) for f in c.stack)) for c in trace.copies]
    ops = [dataclasses.replace(o, site=_rel(o.site)) for o in trace.ops]
    note = "site paths made relative to the repository root by traces/make_moe_cpu_traces.py"
    meta = dataclasses.replace(trace.meta, notes=(*trace.meta.notes, note))
    return dataclasses.replace(trace, copies=tuple(copies), ops=tuple(ops), meta=meta)


def make(mode: str) -> Path:
    """Trace one demo mode and store it as traces/moe-<mode>-cpu.json."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        code = main(["trace", f"copyhunt_moe.demo:{mode}", "--no-device-trace", "-o", str(raw)])
        if code != 0:
            raise SystemExit(f"copyhunt trace exited {code}")
        trace = relative_paths(load(raw))
    return save(trace, ROOT / "traces" / f"moe-{mode}-cpu.json", overwrite=True)


if __name__ == "__main__":
    os.environ.setdefault("COPYHUNT_MOE_DEVICE", "cpu")
    for m in ("baseline", "fixed"):
        print(f"wrote {make(m)}", file=sys.stderr)
