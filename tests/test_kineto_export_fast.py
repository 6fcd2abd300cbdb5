"""``kineto.load_kineto_export`` (the device capture's reader of its own fresh export) builds the same
``KinetoTrace`` as ``kineto.load``, on every stored H200 Kineto trace and on a CPU hunt's export, and
falls back to ``load`` on a layout it does not know."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from copyhunt import kineto

ROOT = Path(__file__).resolve().parent.parent
STORED = sorted((ROOT / "traces" / "kineto-h200").glob("*.json.gz")) + sorted((ROOT / "traces" / "moe-h200").glob("*.kineto.json.gz"))


def _dump(kt: kineto.KinetoTrace) -> tuple:
    rows = lambda evs: [(e.cat, e.name, e.ts, e.dur, e.pid, e.tid, dict(e.args)) for e in evs]  # noqa: E731
    return (rows(kt.gpu), rows(kt.runtime), rows(kt.cpu_ops), rows(kt.annotations), rows(kt.python), rows(kt.bridge),
            kt.meta, sorted((k, v.name, v.ts) for k, v in kt.op_by_ext.items()))  # fmt: skip


@pytest.mark.parametrize("src", STORED, ids=lambda p: p.name)
def test_same_trace_as_load_on_stored_h200_traces(src: Path, tmp_path: Path) -> None:
    plain = tmp_path / src.name[: -len(".gz")]
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    fast = kineto.load_kineto_export(plain)
    assert fast._pending is None or callable(fast._pending)  # the split path was taken, not the fallback
    assert _dump(fast) == _dump(kineto.load(plain))


def test_lazy_events_are_built_once_and_queries_see_them(tmp_path: Path) -> None:
    src = next(p for p in STORED if p.name.startswith("bridge_record_function"))
    plain = tmp_path / "t.json"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    kt = kineto.load_kineto_export(plain)
    assert callable(kt._pending)
    ev = kt.gpu[0]
    src_ev = kt.launcher(ev)
    assert src_ev is not None and kt.cpu_ops_at(src_ev.tid, src_ev.ts)  # built on this first use
    assert kt._pending is None and kt.cpu_ops is kt.cpu_ops


def test_other_layouts_fall_back_to_load(tmp_path: Path) -> None:
    src = STORED[0]
    doc = json.loads(gzip.decompress(src.read_bytes()))
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(doc))  # one line: not Kineto's layout
    kt = kineto.load_kineto_export(compact)
    assert _dump(kt) == _dump(kineto.load(compact))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(kineto.trace.TraceFormatError):
        kineto.load_kineto_export(broken)
