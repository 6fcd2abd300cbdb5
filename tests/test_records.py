"""The trace file contract: round trip of schema 2, version-1 files read into the same records, and one
clear error for files that are not ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copyhunt.errors import TraceFormatError
from copyhunt.records import Access, DeviceTiming, Finding, Frame, OpRecord, StorageInfo, Trace, TraceMeta
from copyhunt.tracefile import SCHEMA, from_json, load, save, to_json
from factories import copy, trace

ROOT = Path(__file__).resolve().parent.parent


def _trace() -> Trace:
    c = copy(3, 24, site=Frame("demo.py", 12, "forward"), module="model.moe", region="decode/moe", shape=(2, 3),
             stack=(Frame("demo.py", 12, "forward"), Frame("run.py", 3, "<module>")), src_storages=(1, 3),
             bytes_exact=False, timing=DeviceTiming("Memcpy DtoD (Device -> Device)", 2.5, 24),
             findings=(Finding("fresh-temporary", "r", "s"), Finding("chained", "r2", "s2")))
    op = OpRecord(seq=3, op="aten.copy_.default", reads=(Access(1, 0, 24),), writes=(Access(2, 0, 24, True),), is_copy=True)
    return trace(
        c, copy(4, 8),
        meta=TraceMeta(device="cpu", target="demo.py", argv=("a", "b"), notes=("n",), focus=("*/m/*",), view={"kinds": ["d2d"]},
                       ops_complete=True, kineto_trace="k.json", device_join={"joined": 1}),
        ops=(op,), storages=(StorageInfo(1, "cpu", 24, False), StorageInfo(2, "cpu", 24, True)),
    )


def test_round_trip_is_exact(tmp_path):
    t = _trace()
    path = save(t, tmp_path / "t.json")
    assert load(path) == t
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA == "copyhunt.trace/3"
    c = doc["copies"][0]
    # The minimum contract other tools rely on.
    for key in ("seq", "op", "kind", "bytes", "noop", "src_device", "dst_device", "shape", "dtype", "site", "module", "region", "captured_in_graph"):
        assert key in c
    assert c["site"] == {"file": "demo.py", "line": 12, "function": "forward"}
    assert (c["src_storages"], c["bytes_exact"]) == ([1, 3], False)
    # Timings and findings sit beside the copies, pointing at them by position; the second copy has none.
    assert doc["timings"] == [{"copy": 0, "name": "Memcpy DtoD (Device -> Device)", "time_us": 2.5, "bytes": 24, "stream": None, "start_us": None}]
    assert doc["findings"] == [
        {"copy": 0, "verdict": "fresh-temporary", "reason": "r", "suggestion": "s"},
        {"copy": 0, "verdict": "chained", "reason": "r2", "suggestion": "s2"},
    ]
    assert "verdict" not in c and "device" not in c  # no fact stored twice
    # Ops as columns, reads and writes flat [storage, offset, nbytes, dense (1/0), ...] per op.
    assert doc["ops"]["n"] == 1 and doc["ops"]["writes"] == [[2, 0, 24, 1]]
    assert doc["meta"]["view"] == {"kinds": ["d2d"]} and doc["meta"]["ops_complete"] is True


def test_the_read_side_joins_record_timing_and_findings():
    first, second = _trace().read_copies()
    assert (first.key, first.verdict, first.reason, first.suggestion) == (0, "fresh-temporary", "r", "s")
    assert (first.site.line, first.bytes, first.moved_bytes, first.device.time_us) == (12, 24, 24, 2.5)
    assert (second.key, second.verdict, second.device) == (1, None, None)
    assert _trace().judged and not trace(copy()).judged
    # An unjudged trace is not the same as a judged one without copies.
    assert trace(judged=True).judged and trace(judged=True).findings == {}


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        save(_trace(), path)
    assert path.read_text() == "precious"
    save(_trace(), path, overwrite=True)
    assert load(path) == _trace()


def test_unknown_keys_are_kept_where_they_were():
    doc = to_json(_trace())
    doc["copies"][0]["future_field"] = 7
    doc["meta"]["future_meta"] = "x"
    t = from_json(doc)
    assert t.copies[0].extra == {"future_field": 7}
    assert t.meta.extra == {"future_meta": "x"}
    again = to_json(t)
    assert again["copies"][0]["future_field"] == 7 and again["meta"]["future_meta"] == "x"


def test_version_1_files_read_into_the_same_records():
    # copyhunt 0.1 wrote device timing and verdicts inside each copy, first-party facts in `extra`,
    # and the capture's filters in meta.filters.
    v1 = {
        "schema": "copyhunt.trace/1",
        "meta": {"device": "cpu", "filters": {"kinds": ["d2d"], "focus": ["*/m/*"]}, "notes": [],
                 "extra": {"kineto_trace": "k.json", "device_join": {"joined": 1}, "mine": 1}},
        "copies": [
            {"seq": 3, "op": "aten.cat.default", "kind": "d2d", "bytes": 8, "noop": False, "src_device": "cpu", "dst_device": "cpu",
             "shape": [2], "dtype": "torch.float32", "site": None, "origin": "graph-replay", "graph_replay": 1,
             "device": {"name": "memcpy128", "time_us": 1.0, "bytes": 8, "stream": 7, "start_us": 5.0},
             "verdict": "needed", "reason": "r", "suggestion": "s", "findings": [{"verdict": "needed", "reason": "r", "suggestion": "s"}],
             "extra": {"src_storages": [1, 2], "bytes_exact": False, "graph": 0, "later": "kept"}},
            {"seq": 4, "op": "aten.clone.default", "kind": "d2d", "bytes": 4, "noop": False, "src_device": "cpu", "dst_device": "cpu",
             "shape": [1], "dtype": "torch.float32", "site": None, "verdict": "noop", "reason": "same storage", "suggestion": "drop it"},
        ],
        "ops": [{"seq": 3, "op": "aten.cat.default", "reads": [[1, 0, 4, True]], "writes": [], "allocs": [], "frees": []}],
        "storages": [],
    }
    t = from_json(v1)
    a, b = t.read_copies()
    assert (a.src_storages, a.bytes_exact, a.graph, a.graph_replay, a.record.extra) == ((1, 2), False, 0, 1, {"later": "kept"})
    assert a.device == DeviceTiming("memcpy128", 1.0, 8, 7, 5.0)
    assert [f.verdict for f in a.findings] == ["needed"]
    # A version-1 copy with a verdict but no findings list reads as one finding.
    assert b.findings == (Finding("noop", "same storage", "drop it"),)
    m = t.meta
    assert (m.focus, m.view, m.kineto_trace, m.device_join, m.extra) == (("*/m/*",), {"kinds": ["d2d"]}, "k.json", {"joined": 1}, {"mine": 1})
    assert m.ops_complete is True  # op records and no record_ops=False note: a full hunt
    assert m.notes == ("traced by copyhunt 0.1 with filters (kinds=d2d): the file holds no other copies",)
    assert to_json(t)["schema"] == "copyhunt.trace/3"


def test_version_2_files_read_into_the_same_records_and_write_as_version_3(tmp_path):
    # traces/moe-baseline-cpu.json: a real CPU hunt written as copyhunt.trace/2 (ops as objects).
    v2_path = ROOT / "traces" / "moe-baseline-cpu.json"
    assert json.loads(v2_path.read_text())["schema"] == "copyhunt.trace/2"
    old = load(v2_path)
    assert len(old.ops) > 100 and old.copies and old.storages
    path = save(old, tmp_path / "v3.json")
    assert load(path) == old  # every record, site and stack frame comes back
    doc = json.loads(path.read_text())
    assert doc["schema"] == "copyhunt.trace/3" and doc["ops"]["n"] == len(old.ops)
    # Frames are written once: every copy's stack names them by index into the frame table.
    assert len(doc["frames"]) == len({f for c in old.copies for f in c.stack} | {o.site for o in old.ops if o.site})
    assert path.stat().st_size < v2_path.stat().st_size / 2


def test_equal_accesses_and_frames_share_one_object_once_loaded(tmp_path):
    a = Access(1, 0, 24)
    ops = tuple(OpRecord(i, "aten.mul.Tensor", reads=(a,), site=Frame("m.py", 3, "f")) for i in range(3))
    back = load(save(Trace(ops=ops), tmp_path / "t.json"))
    assert back.ops == ops
    assert len({id(o.reads[0]) for o in back.ops}) == 1 and len({id(o.site) for o in back.ops}) == 1


def test_stored_version_1_traces_still_load():
    base = load(ROOT / "traces" / "moe-h200" / "moe-baseline.json")  # a real device-captured hunt, version 1
    assert base.judged and len(base.copies) == 8 and len(base.timings) == 8
    assert base.meta.device_join["joined"] == 8 and base.meta.kineto_trace == "traces/moe-h200/moe-baseline.kineto.json.gz"
    graph = load(ROOT / "traces" / "moe-h200" / "graph-hunt.json")
    assert [(c.graph, c.graph_replay) for c in graph.copies] == [(0, 0), (0, 1), (0, 2)] * 2


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema": "copyhunt.trace/2", "copies": [', "not valid JSON, truncated or corrupt"),
        ('{"traceEvents": []}', "not a copyhunt trace (no 'schema' key)"),
        ('{"schema": "other.trace/1"}', "not a copyhunt trace (schema 'other.trace/1'"),
        ('{"schema": "copyhunt.trace/4"}', "written by a newer copyhunt"),
        ('{"schema": "copyhunt.trace/3", "ops": {"n": 2, "seq": [1, 2]}}', "column 'op' is missing"),
        ('{"schema": "copyhunt.trace/3", "strings": ["x"], "ops": {"n": 2, "op": [0]}}', "column 'op' must hold 2 values, got 1 values"),
        # Column values are checked like version 2's: no coercion of a string seq or a negative size.
        ('{"schema": "copyhunt.trace/3", "strings": ["x"], "ops": {"n": 1, "seq": ["5"], "writes": [[]], '
         '"op": {"all": 0}, "reads": [[]], "allocs": {"all": []}, "frees": {"all": []}, "site": {"all": null}, "module": {"all": null}, "region": {"all": null}, "thread": {"all": null}, "is_copy": {"all": 0}, "captured_in_graph": {"all": 0}}}',
         "ops[0].seq must be an integer >= -1, got '5'"),
        ('{"schema": "copyhunt.trace/3", "strings": ["x"], "ops": {"n": 1, "seq": [5], "writes": [[1, 0, -4, 1]], '
         '"op": {"all": 0}, "reads": [[]], "allocs": {"all": []}, "frees": {"all": []}, "site": {"all": null}, "module": {"all": null}, "region": {"all": null}, "thread": {"all": null}, "is_copy": {"all": 0}, "captured_in_graph": {"all": 0}}}',
         "ops[0] access nbytes must be an integer >= 0, got -4"),
        ('{"schema": "copyhunt.trace/3", "ops": [{"seq": 1}]}', "'ops' must be an object of columns, got list"),
        ('{"schema": "copyhunt.trace/3", "frames": [], "copies": [{"seq": 1, "op": "a", "kind": "d2d", "bytes": 1, '
         '"noop": false, "src_device": "cpu", "dst_device": "cpu", "shape": [], "dtype": "f", "stack": [3]}]}',
         "stack frame 3 is not in the frame table (it has 0)"),
        ('{"schema": "copyhunt.trace/x"}', "malformed schema version"),
        ('{"schema": "copyhunt.trace/2", "copies": [{"seq": 1}]}', "copy record is missing op, kind"),
        ('{"schema": "copyhunt.trace/1", "copies": [{"seq": 1}]}', "copy record is missing op, kind"),
        ('{"schema": "copyhunt.trace/2", "timings": [{"copy": 0, "name": "x", "time_us": 1}]}', "'copy' 0 names no copy (the trace has 0)"),
        ('[1, 2]', "not a copyhunt trace"),
    ],
)
def test_bad_files_fail_with_one_line(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TraceFormatError) as info:
        load(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(TraceFormatError, match="no such file"):
        load(tmp_path / "nope.json")


def test_verifications_round_trip_beside_the_copies_and_older_files_have_none(tmp_path):
    from dataclasses import replace

    from copyhunt.records import Verification

    v = Verification("refuted", "the return value differs; first diverging op #7 aten.mul.Tensor (m.py:3)", 7)
    t = replace(_trace(), verifications={1: v})
    path = save(t, tmp_path / "v.json")
    assert load(path) == t
    assert load(path).read_copies()[1].verification == v and load(path).read_copies()[0].verification is None
    assert json.loads(path.read_text())["verifications"] == [
        {"copy": 1, "status": "refuted", "detail": "the return value differs; first diverging op #7 aten.mul.Tensor (m.py:3)", "seq": 7},
    ]
    # A file written before copyhunt verify existed has no such key: nothing was re-run.
    doc = to_json(_trace())
    del doc["verifications"]
    assert from_json(doc).verifications == {} and not from_json(doc).verified
    doc["verifications"] = [{"copy": 0, "status": "maybe", "detail": "?"}]
    with pytest.raises(TraceFormatError, match="unknown verification status 'maybe'"):
        from_json(doc)


def test_every_source_of_a_cat_keeps_its_dtype_and_layout(tmp_path):
    t = trace(copy(1, 32, op="aten.cat.default", src_storage=1, src_storages=(1, 2), src_dtypes=("torch.float32", "torch.float16"),
                   src_contiguity=(True, None)))
    assert load(save(t, tmp_path / "c.json")).copies[0].src_contiguity == (True, None)
