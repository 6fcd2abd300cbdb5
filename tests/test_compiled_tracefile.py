"""The torch.compile facts in the trace file: ``CopyRecord.compiled`` and ``TraceMeta.compiled`` are real
fields, written as objects and read back exactly; the compile branch's version-1 files (the same facts
in ``extra["compiled"]`` maps) read into the same fields."""

from __future__ import annotations

import pytest

from copyhunt.errors import TraceFormatError
from copyhunt.records import CompiledCopy, CompiledGraphRun, CompiledHunt, Frame, TraceMeta
from copyhunt.tracefile import from_json, to_json
from factories import record, trace

FUSED = CompiledCopy(graph=2, node="clone", graph_op="aten.clone.default", how="fused", call=7, execution=1,
                     kernels=("cpp_fused_clone_mul_0",), fused_with=("mul",), kernel_us=6.0)
INTO_INPUT = CompiledCopy(graph=2, node="copy_", graph_op="aten.copy_.default", how="fused", call=7,
                          mutates_input="arg1_1", src_is_input=True)
SUMMARY = CompiledHunt(
    mode="compiled",
    graphs=(CompiledGraphRun(graph=2, executions=3, copies=("clone", "copy_"), removed=("convert_element_type",), kernel_names=True),),
    before_hunt_executions=1,
    device_events_joined=4,
)


def _trace():
    site = Frame("m.py", 3, "step")
    return trace(
        record(8, 64, site=site, op="aten.clone.default", origin="compiled", compiled=FUSED, bytes_exact=False),
        record(9, 64, site=site, origin="compiled", compiled=INTO_INPUT),
        record(10, 16, site=site),
        meta=TraceMeta(compiled=SUMMARY),
    )


def test_compiled_facts_are_objects_in_the_file_and_read_back_exactly():
    t = _trace()
    doc = to_json(t)
    assert doc["copies"][0]["compiled"] == {
        "graph": 2, "node": "clone", "graph_op": "aten.clone.default", "how": "fused", "call": 7, "execution": 1,
        "kernels": ["cpp_fused_clone_mul_0"], "fused_with": ["mul"], "mutates_input": None, "src_is_input": False,
        "kernel_us": 6.0,
    }
    assert doc["copies"][2]["compiled"] is None  # a dispatch copy
    assert doc["meta"]["compiled"] == {
        "mode": "compiled",
        "graphs": [{"graph": 2, "executions": 3, "copies": ["clone", "copy_"], "removed": ["convert_element_type"], "kernel_names": True}],
        "before_hunt_executions": 1, "ran_eagerly": [], "device_events_joined": 4,
    }
    assert "extra" not in doc["copies"][0] and doc["copies"][0].keys() >= {"compiled", "bytes_exact"}
    assert from_json(doc) == t
    eager = trace(meta=TraceMeta(compiled=CompiledHunt(mode="eager", ran_eagerly=("step (m.py:1)",))))
    assert from_json(to_json(eager)) == eager
    assert from_json(to_json(trace())).meta.compiled is None


def test_the_compile_branch_version_1_files_read_into_the_fields():
    v1 = {
        "schema": "copyhunt.trace/1",
        "meta": {"extra": {"compiled": {"mode": "compiled", "before_hunt_executions": 1, "device_events_joined": 4,
                                        "graphs": [{"graph": 2, "executions": 3, "copies": ["clone", "copy_"],
                                                    "removed": ["convert_element_type"], "kernel_names": True}]}}},
        "copies": [
            {"seq": 8, "op": "aten.clone.default", "kind": "d2d", "bytes": 64, "noop": False, "src_device": "cpu",
             "dst_device": "cpu", "shape": [16], "dtype": "torch.float32", "site": {"file": "m.py", "line": 3, "function": "step"},
             "origin": "compiled",
             "extra": {"bytes_exact": False, "compiled": {"graph": 2, "node": "clone", "graph_op": "aten.clone.default",
                                                          "how": "fused", "kernels": ["cpp_fused_clone_mul_0"], "fused_with": ["mul"],
                                                          "mutates_input": None, "src_is_input": False, "call": 7,
                                                          "execution": 1, "kernel_us": 6.0}}},
        ],
    }
    t = from_json(v1)
    (c,) = t.copies
    assert (c.compiled, c.bytes_exact, c.extra) == (FUSED, False, {})
    assert (t.meta.compiled, t.meta.extra) == (SUMMARY, {})


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("copy", "fused", "a copy's 'compiled' must be an object or null, got str"),
        ("copy", {"graph": 2}, "malformed trace record (TypeError"),
        ("meta", [1], "'meta.compiled' must be an object or null, got list"),
    ],
)
def test_malformed_compiled_facts_fail_with_one_line(where, value, message):
    doc = to_json(_trace())
    if where == "copy":
        doc["copies"][0]["compiled"] = value
    else:
        doc["meta"]["compiled"] = value
    with pytest.raises(TraceFormatError, match=message.replace("(", r"\(")):
        from_json(doc)
