"""Sample traces for the HTML report's tests: the MoE demo's stored traces, a hostile trace, 10k copies."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from copyhunt.records import Copy, Frame, Trace, TraceMeta
import factories
from copyhunt.report.html import PNG_SIGNATURE

ROOT = Path(__file__).resolve().parent.parent
MOE_BASELINE = ROOT / "traces" / "moe-baseline-cpu.json"
MOE_H200 = ROOT / "traces" / "moe-h200" / "moe-baseline.json"


def copy(seq: int, site: Frame | None, *, stack: tuple[Frame, ...] = (), nbytes: int = 1024, verdict: str | None = None,
         device=None, **kw) -> Copy:
    """A clone (by default) of ``nbytes`` on the CPU at ``site``, its stack just the site unless given."""
    return factories.copy(seq, nbytes, op=kw.pop("op", "aten.clone.default"), site=site, stack=stack or ((site,) if site else ()),
                          verdict=verdict, timing=device, **kw)


def ten_thousand_copies(n: int = 10_000) -> Trace:
    """n copies from 40 sites x 5 callers x 2 verdicts (400 entries), with reasons, modules and a region."""
    copies = []
    for i in range(n):
        site = Frame(f"/srv/model/layer{i % 40}.py", 10, "forward")
        caller = Frame("/srv/model/net.py", 100 + (i // 40) % 5, "step")
        copies.append(copy(i, site, stack=(site, caller, Frame("/srv/serve.py", 9, "main")), nbytes=512 * (1 + i % 40),
                           verdict="fresh-temporary" if (i // 200) % 2 else "needed", reason=f"buffer #{i} made at line {i}",
                           suggestion="write into the destination", module=f"net.layers.{i % 12}", region="decode"))
    return factories.trace(*copies, meta=TraceMeta(target="serve.py"))


HOSTILE = '</script><script>document.title="PWNED"</script><img src=x onerror="document.body.dataset.pwned=1">&amp;'


def write_hostile_trace(path: Path) -> Path:
    """A trace a stranger could send: markup, </script>, control characters, a 1 MB name, odd types."""
    site = {"file": HOSTILE, "line": 7, "function": HOSTILE}
    huge = {"file": "huge.py", "line": 1, "function": "y" * 1_000_000}

    def rec(seq, op, frame, **kw):
        base = {"seq": seq, "op": op, "kind": "d2d", "bytes": 64, "noop": False, "src_device": "cpu", "dst_device": "cpu",
                "shape": [16], "dtype": "torch.float32", "site": frame, "stack": [frame, {"file": "\x1b[2J.py", "line": 1, "function": "\u202emain"}]}
        base.update(kw)
        return base

    doc = {
        "schema": "copyhunt.trace/1",
        "meta": {"target": HOSTILE, "device": "<b>cpu</b>", "argv": ["x", "<i>arg</i>"], "complete": False, "error": HOSTILE,
                 "notes": ["note \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\"], "filters": {"<k>": ["<v>"]}},
        "copies": [
            # 1 GiB, so that it leads the first view even beside many other copies.
            rec(1, HOSTILE, site, bytes=2**30, verdict="__proto__", reason=HOSTILE, suggestion=HOSTILE, module=HOSTILE,
                region=HOSTILE, source="x = y.clone()  # <b>not bold</b>"),
            rec(2, "__proto__", site, verdict="needed", bytes=float("nan")),
            rec(3, "constructor", huge, bytes=-10**9),
            rec(4, 3, site, device={"name": "<k>", "time_us": float("inf")}),
            # Finite, but two of them would sum to infinity (JSON has no Infinity).
            rec(5, 3, site, device={"name": "<k>", "time_us": 1e308}),
            rec(6, 3, site, device={"name": "<k>", "time_us": 1e308}),
        ],
        "ops": [],
        "storages": [],
    }
    path.write_text(json.dumps(doc), encoding="utf-8")  # NaN and Infinity, as Python's json writes them
    return path


def load_unchecked(path: Path):
    """The hostile trace's records as built from the file WITHOUT the load-time checks (the loader
    refuses its NaN and negative bytes): the page must hold up even if such records reach it."""
    from copyhunt.tracefile import _from_v1

    return _from_v1(json.loads(path.read_text(encoding="utf-8")))


def tiny_png() -> bytes:
    """A valid 1x1 PNG (signature, IHDR, IDAT, IEND), built here so no file is needed."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


def bench_doc(preset: str = "tiny") -> dict:
    """A `copyhunt bench moe --json` document with one row (and a column the page ignores)."""
    return {"schema": "copyhunt.bench.moe/1", "config": {"preset": preset, "layers": 4}, "device": "cpu", "backend": "torch",
            "smoke": True, "rows": [{"mode": "eager", "tokens": 1, "baseline_us": 100.0, "fixed_us": 90.0, "saved_us": 10.0,
                                     "spread_us": 1.5, "ideal_us": 8.0, "realized": 1.25, "saved_pct": 10.0,
                                     "fixed_not_slower": True, "extra_column": "<ignored>"}]}
