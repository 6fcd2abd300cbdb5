"""The trace file contract: round trip, and one clear error for files that are not ours."""

from __future__ import annotations

import json

import pytest

from copyhunt.errors import TraceFormatError
from copyhunt.records import (
    SCHEMA,
    Access,
    CopyRecord,
    DeviceTiming,
    Finding,
    Frame,
    OpRecord,
    StorageInfo,
    Trace,
    TraceMeta,
    load,
    save,
)


def _trace() -> Trace:
    copy = CopyRecord(
        seq=3, op="aten.copy_.default", kind="d2d", bytes=24, noop=False,
        src_device="cpu", dst_device="cpu", shape=(2, 3), dtype="torch.float32",
        site=Frame("demo.py", 12, "forward"), module="model.moe", region="decode/moe",
        stack=(Frame("demo.py", 12, "forward"), Frame("run.py", 3, "<module>")),
        device=DeviceTiming("Memcpy DtoD (Device -> Device)", 2.5, 24),
        findings=(Finding("fresh-temporary", "r", "s"),), verdict="fresh-temporary",
    )
    op = OpRecord(seq=3, op="aten.copy_.default", reads=(Access(1, 0, 24),), writes=(Access(2, 0, 24, True),), is_copy=True)
    return Trace(
        meta=TraceMeta(device="cpu", target="demo.py", argv=("a", "b"), notes=("n",)),
        copies=(copy,), ops=(op,), storages=(StorageInfo(1, "cpu", 24, False), StorageInfo(2, "cpu", 24, True)),
    )


def test_round_trip_is_exact(tmp_path):
    trace = _trace()
    path = save(trace, tmp_path / "t.json")
    assert load(path) == trace
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA == "copyhunt.trace/1"
    c = doc["copies"][0]
    # The minimum contract other tools rely on.
    for key in ("seq", "op", "kind", "bytes", "noop", "src_device", "dst_device", "shape", "dtype", "site", "module", "region", "captured_in_graph"):
        assert key in c
    assert c["site"] == {"file": "demo.py", "line": 12, "function": "forward"}
    assert c["device"] == {"name": "Memcpy DtoD (Device -> Device)", "time_us": 2.5, "bytes": 24, "stream": None, "start_us": None}
    assert doc["ops"][0]["writes"] == [[2, 0, 24, True]]


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        save(_trace(), path)
    assert path.read_text() == "precious"
    save(_trace(), path, overwrite=True)
    assert load(path) == _trace()


def test_unknown_keys_are_kept(tmp_path):
    doc = _trace().to_json()
    doc["copies"][0]["future_field"] = 7
    doc["meta"]["future_meta"] = "x"
    t = Trace.from_json(doc)
    assert t.copies[0].extra == {"future_field": 7}
    assert t.meta.extra == {"future_meta": "x"}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema": "copyhunt.trace/1", "copies": [', "not valid JSON, truncated or corrupt"),
        ('{"traceEvents": []}', "not a copyhunt trace (no 'schema' key)"),
        ('{"schema": "other.trace/1"}', "not a copyhunt trace (schema 'other.trace/1'"),
        ('{"schema": "copyhunt.trace/2"}', "written by a newer copyhunt"),
        ('{"schema": "copyhunt.trace/x"}', "malformed schema version"),
        ('{"schema": "copyhunt.trace/1", "copies": [{"seq": 1}]}', "copy record is missing op, kind"),
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


def test_verification_round_trips_and_older_files_have_none(tmp_path):
    from dataclasses import replace

    from copyhunt.records import Verification

    v = Verification("refuted", "the return value differs; first diverging op #7 aten.mul.Tensor (m.py:3)", 7)
    trace = _trace().with_copies([replace(_trace().copies[0], verification=v)])
    path = save(trace, tmp_path / "v.json")
    assert load(path) == trace
    assert json.loads(path.read_text())["copies"][0]["verification"] == {
        "status": "refuted", "detail": "the return value differs; first diverging op #7 aten.mul.Tensor (m.py:3)", "seq": 7,
    }
    # A file written before copyhunt verify existed has no such key: the copies are simply unverified.
    doc = _trace().to_json()
    del doc["copies"][0]["verification"]
    assert Trace.from_json(doc).copies[0].verification is None
    doc["copies"][0]["verification"] = {"status": "maybe", "detail": "?"}
    with pytest.raises(TraceFormatError, match="unknown verification status 'maybe'"):
        Trace.from_json(doc)
