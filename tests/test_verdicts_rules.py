"""Verdict rules on hand-built traces: every verdict, its reason, and the needed cases it must leave alone.

Traces are built op by op (seq 0, 1, 2...); storages are small and sizes are float32 bytes
(4 elements = 16 bytes) unless a test says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Union

import pytest

from copyhunt.analysis import index as index_mod
from copyhunt.analysis import judge
from copyhunt.analysis.rules import registered, rule, run_rules
from copyhunt.analysis.index import TraceIndex
from copyhunt.records import VERDICTS, Access, Copy, CopyRecord, Finding, Frame, OpRecord, StorageInfo, Trace
from copyhunt.tracefile import load, save
from factories import record, with_copies

# An access spec: a storage id (its whole range, dense) or (storage, offset, nbytes[, dense]).
Spec = Union[int, tuple]


@dataclass
class TraceBuilder:
    """Appends ops (and copy records) in order; seq numbers are 0, 1, 2..."""

    storages: dict[int, StorageInfo] = field(default_factory=dict)
    ops: list[OpRecord] = field(default_factory=list)
    copies: list[CopyRecord] = field(default_factory=list)

    def storage(self, sid: int, nbytes: int = 16, device: str = "cpu", alive: bool = True) -> int:
        """Declare storage ``sid`` of ``nbytes`` bytes."""
        self.storages[sid] = StorageInfo(sid, device, nbytes, alive)
        return sid

    def _access(self, spec: Spec) -> Access:
        if isinstance(spec, int):
            if spec not in self.storages:  # an undeclared storage: 16 B, alive at the end
                self.storage(spec)
            return Access(spec, 0, self.storages[spec].nbytes, True)
        storage, offset, nbytes, *rest = spec
        return Access(storage, offset, nbytes, rest[0] if rest else True)

    def op(self, name: str, reads: tuple = (), writes: tuple = (), allocs: tuple = (), frees: tuple = (),
           line: int | None = None, is_copy: bool = False, captured: bool = False) -> int:
        """Append an op; returns its seq. ``line`` gives it the site ``/src/t.py:<line>``."""
        seq = len(self.ops)
        self.ops.append(OpRecord(
            seq=seq, op=f"aten.{name}.default",
            reads=tuple(self._access(r) for r in reads), writes=tuple(self._access(w) for w in writes),
            allocs=tuple(allocs), frees=tuple(frees),
            site=None if line is None else Frame("/src/t.py", line, "f"), is_copy=is_copy,
            captured_in_graph=captured,
        ))
        return seq

    def copy(self, name: str, src: int | None, dst: int | None, reads: tuple = (), writes: tuple = (),
             allocs: tuple = (), frees: tuple = (), line: int | None = None, *, dtype: str = "torch.float32",
             src_dtype: str | None = None, shape: tuple = (4,), src_contiguous: bool | None = True,
             dst_contiguous: bool | None = True, noop: bool = False, src_device: str = "cpu",
             dst_device: str = "cpu", origin: str = "dispatch", record_op: bool = True, captured: bool = False) -> int:
        """Append a copy op and its record (default accesses: whole source read, whole destination written)."""
        reads = reads or ((src,) if src is not None else ())
        writes = writes or ((dst,) if dst is not None else ())
        seq = self.op(name, reads, writes, allocs, frees, line, is_copy=True, captured=captured) if record_op else len(self.ops)
        nbytes = sum(self._access(w).nbytes for w in writes)
        kind = "d2d" if src_device == dst_device else "h2d" if src_device == "cpu" else "d2h" if dst_device == "cpu" else "p2p"
        self.copies.append(record(
            seq, nbytes, op=f"aten.{name}.default", kind=kind, noop=noop,
            src_device=src_device, dst_device=dst_device, shape=shape, dtype=dtype,
            site=None if line is None else Frame("/src/t.py", line, "f"),
            src_dtype=src_dtype, src_contiguous=src_contiguous, dst_contiguous=dst_contiguous,
            src_storage=src, dst_storage=dst, origin=origin, captured_in_graph=captured,
        ))
        return seq

    def trace(self) -> Trace:
        """The built trace."""
        return Trace(copies=tuple(self.copies), ops=tuple(self.ops), storages=tuple(self.storages.values()))


def verdicts(trace: Trace) -> list[str | None]:
    """Verdict of every copy, in trace order."""
    return [c.verdict for c in judge(trace).read_copies()]


def only(trace: Trace) -> Copy:
    """The single judged copy of a trace."""
    (c,) = judge(trace).read_copies()
    return c


# --- noop --------------------------------------------------------------------------------------


def test_noop_self_copy():
    b = TraceBuilder()
    b.storage(1)
    b.copy("copy_", 1, 1, line=5, noop=True)
    c = only(b.trace())
    assert (c.verdict, c.reason, c.suggestion) == (
        "noop", "source and destination are the same storage and layout: PyTorch does no work", "drop the call: it copies nothing",
    )
    assert [f.verdict for f in c.findings] == ["noop"]


# --- dead-store --------------------------------------------------------------------------------


def _into_buffer(b: TraceBuilder, buf_alive: bool = True) -> int:
    """x (#1) copied into buf (#2), both 16 B; returns the copy's seq."""
    b.storage(1)
    b.storage(2, alive=buf_alive)
    return b.copy("copy_", 1, 2, line=10)


def test_dead_store_overwritten_before_read():
    b = TraceBuilder()
    _into_buffer(b)
    b.op("fill_", writes=(2,), line=11)  # all 16 B replaced
    b.op("sum", reads=(2,), writes=(3,), allocs=(3,), line=12)
    c = only(b.trace())
    assert c.verdict == "dead-store"
    assert c.reason == "the destination (a 16 B buffer made before the hunt, first used by aten.copy_ at t.py:10) is overwritten by aten.fill_ at t.py:11 before anything reads it"
    assert c.suggestion == "drop the copy: its bytes are replaced before any use"


def test_dead_store_overwritten_piecewise_by_two_dense_halves():
    b = TraceBuilder()
    _into_buffer(b)
    b.op("fill_", writes=((2, 0, 8),), line=11)  # bytes 0..8
    b.op("sum", reads=((2, 0, 8),), line=12)  # reads only the already-replaced half: not our bytes
    b.op("fill_", writes=((2, 8, 8),), line=13)  # bytes 8..16: now all 16 copied bytes are gone
    b.op("sum", reads=(2,), line=14)
    assert only(b.trace()).reason == (
        "the destination (a 16 B buffer made before the hunt, first used by aten.copy_ at t.py:10) is overwritten by aten.fill_ at t.py:13 before anything reads it"
    )


def test_needed_when_half_overwritten_and_other_half_read():
    b = TraceBuilder()
    _into_buffer(b)
    b.op("fill_", writes=((2, 0, 8),), line=11)
    b.op("sum", reads=((2, 8, 8),), line=12)  # bytes 8..16 still hold the copied values
    c = only(b.trace())
    assert (c.verdict, c.reason, c.suggestion) == ("needed", "none of the rules applied", "keep it")


def test_strided_write_does_not_count_as_overwrite():
    b = TraceBuilder()
    _into_buffer(b)
    b.op("index_put_", writes=((2, 0, 16, False),), line=11)  # touches only some bytes of the range
    b.op("sum", reads=(2,), line=12)
    assert verdicts(b.trace()) == ["needed"]


def test_dead_store_freed_before_read():
    b = TraceBuilder()
    _into_buffer(b, buf_alive=False)
    b.op("relu", reads=(1,), writes=(3,), allocs=(3,), frees=(2,), line=11)
    c = only(b.trace())
    assert c.verdict == "dead-store"
    assert c.reason == "the destination (a 16 B buffer made before the hunt, first used by aten.copy_ at t.py:10) is freed (before aten.relu at t.py:11) before anything reads it"
    assert c.suggestion == "drop the copy: nothing reads what it writes"


def test_dead_store_when_destination_dies_unread_at_the_end():
    b = TraceBuilder()
    _into_buffer(b, buf_alive=False)
    assert only(b.trace()).reason == "the destination (a 16 B buffer made before the hunt, first used by aten.copy_ at t.py:10) is dead when the hunt ended before anything reads it"


def test_needed_when_destination_outlives_the_hunt_unread():
    # Still referenced at the end and never read inside the trace: the caller may read it later.
    b = TraceBuilder()
    _into_buffer(b, buf_alive=True)
    assert verdicts(b.trace()) == ["needed"]


def test_needed_copy_into_a_buffer_read_later():
    b = TraceBuilder()
    _into_buffer(b)
    b.op("sum", reads=(2,), writes=(3,), allocs=(3,), line=11)
    b.op("fill_", writes=(2,), line=12)
    assert verdicts(b.trace()) == ["needed"]


# --- fresh-temporary ---------------------------------------------------------------------------


def _fresh(b: TraceBuilder, *, tmp_device: str = "cpu", out_device: str = "cpu") -> int:
    """tmp (#3) = mm(a #1, w #2); out (#4, alive) .copy_(tmp); returns the copy's seq."""
    b.storage(1, device=tmp_device)
    b.storage(2, device=tmp_device)
    b.storage(3, device=tmp_device, alive=False)
    b.storage(4, device=out_device)
    b.op("mm", reads=(1, 2), writes=(3,), allocs=(3,), line=20)
    return b.copy("copy_", 3, 4, line=21, src_device=tmp_device, dst_device=out_device)


def test_fresh_temporary_names_producer_and_line():
    b = TraceBuilder()
    _fresh(b)
    b.op("relu", reads=(4,), writes=(5,), allocs=(5,), frees=(3,), line=22)
    c = only(b.trace())
    assert c.verdict == "fresh-temporary"
    assert c.reason == (
        "source (a fresh 16 B buffer made by aten.mm at t.py:20) is read only by this copy, then freed (before aten.relu at t.py:22)"
    )
    assert c.suggestion == (
        "let aten.mm at t.py:20 write straight into this copy's destination "
        "(destination passing: out=/output= or an in-place variant), then drop this copy"
    )


def test_needed_when_source_is_read_again_later():
    b = TraceBuilder()
    _fresh(b)
    b.op("relu", reads=(3,), writes=(5,), allocs=(5,), line=22)  # tmp used again after the copy
    b.op("add", reads=(4, 5), writes=(6,), allocs=(6,), frees=(3,), line=23)
    assert verdicts(b.trace()) == ["needed"]


def test_needed_when_source_has_another_reader_before_the_copy():
    b = TraceBuilder()
    b.storage(1)
    b.storage(3, alive=False)
    b.storage(4)
    b.op("mm", reads=(1,), writes=(3,), allocs=(3,), line=20)
    b.op("sum", reads=(3,), writes=(5,), allocs=(5,), line=21)
    b.copy("copy_", 3, 4, line=22)
    b.op("relu", reads=(4,), frees=(3,), line=23)
    assert verdicts(b.trace()) == ["needed"]


def test_needed_when_destination_is_read_between_producer_and_copy():
    b = TraceBuilder()
    b.storage(1)
    b.storage(3, alive=False)
    b.storage(4)
    b.op("mm", reads=(1,), writes=(3,), allocs=(3,), line=20)
    b.op("sum", reads=(4,), writes=(5,), allocs=(5,), line=21)  # reads out's old value
    b.copy("copy_", 3, 4, line=22)
    b.op("relu", reads=(4,), frees=(3,), line=23)
    assert verdicts(b.trace()) == ["needed"]


def test_needed_when_source_outlives_the_hunt():
    b = TraceBuilder()
    _fresh(b)
    b.storages[3] = replace(b.storages[3], alive_at_end=True)  # returned to the caller, say
    b.op("relu", reads=(4,), line=22)
    assert verdicts(b.trace()) == ["needed"]


@pytest.mark.parametrize(("tmp_device", "out_device"), [("cuda:0", "cpu"), ("cpu", "cuda:0")])
def test_needed_cross_device_copy_of_a_fresh_temporary(tmp_device, out_device):
    # d2h of a fresh device result / h2d of a fresh host tensor: the producer cannot write there.
    b = TraceBuilder()
    _fresh(b, tmp_device=tmp_device, out_device=out_device)
    b.op("relu", reads=(4,), frees=(3,), line=22)
    c = only(b.trace())
    assert c.kind in ("d2h", "h2d")
    assert c.verdict == "needed"


def test_fresh_temporary_accumulated_in_place_names_first_and_last_writer():
    b = TraceBuilder()
    b.storage(1, alive=False)
    b.storage(2)
    b.op("zeros", writes=(1,), allocs=(1,), line=40)
    b.op("index_add_", reads=(1,), writes=((1, 0, 16, False),), line=41)  # read-modify-write
    b.op("index_add_", reads=(1,), writes=((1, 0, 16, False),), line=41)
    b.copy("copy_", 1, 2, line=42)
    b.op("relu", reads=(2,), frees=(1,), line=43)
    c = only(b.trace())
    assert c.reason == (
        "source (a fresh 16 B buffer made by aten.zeros at t.py:40, last written by aten.index_add_ at t.py:41) "
        "is read only by this copy, then freed (before aten.relu at t.py:43)"
    )
    assert c.suggestion.startswith("let aten.index_add_ at t.py:41 write straight into this copy's destination")


def test_moe_like_pair_result_copy_then_workspace_copy():
    # Layer 1: result (#1) -> 16 B view of the 64 B workspace (#2) -> output (#3).
    # Layer 2 overwrites the same workspace bytes (#4 -> #2), so layer 1's workspace value dies.
    b = TraceBuilder()
    b.storage(1, alive=False)
    b.storage(2, nbytes=64)
    b.storage(3)
    b.storage(4, alive=False)
    b.storage(5)
    b.op("experts", reads=(3,), writes=(1,), allocs=(1,), line=30)
    first = b.copy("copy_", 1, 2, writes=((2, 0, 16),), line=31)
    second = b.copy("copy_", 2, 3, reads=((2, 0, 16),), frees=(1,), line=32)
    b.op("experts", reads=(3,), writes=(4,), allocs=(4,), line=30)
    b.copy("copy_", 4, 2, writes=((2, 0, 16),), line=31)
    b.copy("copy_", 2, 5, reads=((2, 0, 16),), frees=(4,), line=32)
    b.op("add", reads=(3, 5), frees=(2,), line=33)
    judged = judge(b.trace()).read_copies()
    assert [c.verdict for c in judged] == ["fresh-temporary"] * 4
    one, two = judged[0], judged[1]
    assert (one.seq, two.seq) == (first, second)
    assert one.reason == "source (a fresh 16 B buffer made by aten.experts at t.py:30) is read only by this copy, then freed (before aten.copy_ at t.py:32)"
    assert two.reason == (
        "source (16 B of the reused 64 B buffer made before the hunt, first used by aten.copy_ at t.py:31) was just written by aten.copy_ at t.py:31, "
        "is read only by this copy, then overwritten by aten.copy_ at t.py:31"
    )
    assert two.suggestion == (
        "pass this copy's destination to aten.copy_ at t.py:31 as its output instead of the reused buffer made before the hunt, "
        "first used by aten.copy_ at t.py:31 (output alias), "
        "so this copy can be skipped; that producer is itself a copy, so one op would do"
    )
    # The workspace copy is also a copy of a copy: both findings, strongest first.
    assert [f.verdict for f in two.findings] == ["fresh-temporary", "chained"]
    # Layer 2's workspace value dies with the workspace (freed before the add).
    assert judged[3].reason.endswith("is read only by this copy, then freed (before aten.add at t.py:33)")


# --- round-trip --------------------------------------------------------------------------------


def _there_and_back(b: TraceBuilder, a_dtype: str, b_dtype: str, a_bytes: int, b_bytes: int) -> int:
    """A (#1) -> B (#2, new) by _to_copy, then B copied back into A; returns the copy-back seq."""
    b.storage(1, nbytes=a_bytes)
    b.storage(2, nbytes=b_bytes, alive=False)
    b.copy("_to_copy", 1, 2, allocs=(2,), line=50, dtype=b_dtype, src_dtype=a_dtype)
    b.op("relu", reads=(2,), writes=(3,), allocs=(3,), line=51)  # B is also used for something else
    return b.copy("copy_", 2, 1, line=52, dtype=a_dtype, src_dtype=b_dtype)


def test_round_trip_back_into_the_original():
    # 4 elements: fp16 A is 8 B, fp32 B is 16 B; fp16 -> fp32 -> fp16 is exact.
    b = TraceBuilder()
    _there_and_back(b, "torch.float16", "torch.float32", 8, 16)
    b.op("sum", reads=(1,), frees=(2,), line=53)
    first, back = judge(b.trace()).read_copies()
    assert first.verdict == "needed"
    assert back.verdict == "round-trip"
    assert back.reason == "writes back into the buffer made before the hunt, first used by aten._to_copy at t.py:50 the values aten._to_copy at t.py:50 copied out of it; neither side changed since"
    assert back.suggestion == "drop this copy: the destination already holds these values"


def test_needed_lossy_cast_and_back():
    # fp32 -> bf16 -> fp32 rounds: writing it back changes A.
    b = TraceBuilder()
    _there_and_back(b, "torch.float32", "torch.bfloat16", 16, 8)
    b.op("sum", reads=(1,), frees=(2,), line=53)
    assert verdicts(b.trace()) == ["needed", "needed"]


def test_needed_when_original_changed_in_between():
    b = TraceBuilder()
    b.storage(1, nbytes=8)
    b.storage(2, nbytes=16, alive=False)
    b.copy("_to_copy", 1, 2, allocs=(2,), line=50, dtype="torch.float32", src_dtype="torch.float16")
    b.op("relu", reads=(2,), writes=(3,), allocs=(3,), line=51)
    b.op("add_", reads=(1,), writes=(1,), line=52)  # A updated: copying B back undoes the update
    b.copy("copy_", 2, 1, line=53, dtype="torch.float16", src_dtype="torch.float32")
    b.op("sum", reads=(1,), frees=(2,), line=54)
    assert verdicts(b.trace()) == ["needed", "needed"]


def test_round_trip_into_a_new_buffer():
    b = TraceBuilder()
    b.storage(1, nbytes=8)
    b.storage(2, nbytes=16, alive=False)
    b.storage(4, nbytes=8, alive=False)
    b.copy("_to_copy", 1, 2, allocs=(2,), line=50, dtype="torch.float32", src_dtype="torch.float16")
    b.op("relu", reads=(2,), writes=(3,), allocs=(3,), line=51)
    b.copy("_to_copy", 2, 4, allocs=(4,), line=52, dtype="torch.float16", src_dtype="torch.float32")
    b.op("add", reads=(4, 1), frees=(2,), line=53)
    first, back = judge(b.trace()).read_copies()
    assert back.verdict == "round-trip"
    assert back.reason == "recreates the buffer made before the hunt, first used by aten._to_copy at t.py:50 (which aten._to_copy at t.py:50 copied out) unchanged; neither is written while this copy lives"
    assert back.suggestion == "use the original (the buffer made before the hunt, first used by aten._to_copy at t.py:50) instead of copying it back"


# --- chained -----------------------------------------------------------------------------------


def test_chained_copy_of_part_of_a_clone():
    # full = x.clone() (16 B); part = full[:2].to(float64) reads bytes 0..8 only; full then dies.
    b = TraceBuilder()
    b.storage(1)
    b.storage(2, alive=False)
    b.storage(3)
    b.copy("clone", 1, 2, allocs=(2,), line=60)
    b.copy("_to_copy", 2, 3, reads=((2, 0, 8),), allocs=(3,), line=61, dtype="torch.float64",
           src_dtype="torch.float32", shape=(2,))
    b.op("sum", reads=(3,), frees=(2,), line=62)
    clone, part = judge(b.trace()).read_copies()
    assert part.verdict == "chained"
    assert part.reason == ("copies 8 B of a 16 B buffer, which aten.clone at t.py:60 had just copied from the buffer made before the hunt, "
                           "first used by aten.clone at t.py:60; nothing else reads it")
    assert part.suggestion == "copy from the buffer made before the hunt, first used by aten.clone at t.py:60 straight into the destination in one op (e.g. one .to(dtype, memory_format=...) or one copy_)"
    assert [f.verdict for f in part.findings] == ["chained"]  # clone wrote more than was copied: not fresh-temporary
    assert clone.verdict == "defensive-clone"


def test_needed_chain_whose_intermediate_is_read_later():
    b = TraceBuilder()
    b.storage(1)
    b.storage(2, alive=False)
    b.storage(3)
    b.copy("clone", 1, 2, allocs=(2,), line=60)
    b.copy("_to_copy", 2, 3, reads=((2, 0, 8),), allocs=(3,), line=61, dtype="torch.float64", src_dtype="torch.float32")
    b.op("sum", reads=(2, 3), line=62)  # the intermediate is used again
    b.op("relu", reads=(3,), frees=(2,), line=63)
    assert verdicts(b.trace())[1] == "needed"


# --- defensive-clone ---------------------------------------------------------------------------


def _clone(b: TraceBuilder, alive: bool = False, src_contiguous: bool = True) -> int:
    b.storage(1)
    b.storage(2, alive=alive)
    return b.copy("clone", 1, 2, allocs=(2,), line=70, src_contiguous=src_contiguous)


def test_defensive_clone():
    b = TraceBuilder()
    _clone(b)
    b.op("add", reads=(2, 1), writes=(3,), allocs=(3,), line=71)
    b.op("relu", reads=(3,), frees=(2,), line=72)
    c = only(b.trace())
    assert c.verdict == "defensive-clone"
    assert c.reason == ("neither the source (the buffer made before the hunt, first used by aten.clone at t.py:70) nor this copy "
                        "is written until it is freed (before aten.relu at t.py:72): an alias would do")
    assert c.suggestion == "use the source (or a view of it) instead of the copy"


def test_clone_of_a_strided_source_is_not_proven_eliminable_its_consumer_may_need_the_layout():
    # Issue 11: "use the source" makes the consumer see a strided tensor; a reshape there copies
    # instead, a .view() fails. The trace cannot tell, so the copy stays, with the condition spelled out.
    b = TraceBuilder()
    _clone(b, src_contiguous=False)
    b.op("mm", reads=(2,), frees=(), line=71)
    c = only(b.trace())  # storage #2 is dead at the end (alive=False)
    assert c.verdict == "needed"
    assert c.reason == (
        "neither the source (the buffer made before the hunt, first used by aten.clone at t.py:70) nor this copy is written until it dies, but it makes a contiguous layout "
        "of a strided source, and the trace cannot tell whether its consumer needs one"
    )
    assert c.suggestion == "keep it, unless its consumer takes a strided tensor: then use the source itself"


def test_needed_copy_that_preserves_a_value_before_the_source_is_mutated():
    # saved = x.clone(); x.add_(1); use(saved, x)
    b = TraceBuilder()
    _clone(b)
    b.op("add_", reads=(1,), writes=(1,), line=71)
    b.op("sub", reads=(1, 2), writes=(3,), allocs=(3,), frees=(), line=72)
    b.op("relu", reads=(3,), frees=(2,), line=73)
    assert verdicts(b.trace()) == ["needed"]


def test_needed_clone_that_is_written_itself():
    b = TraceBuilder()
    _clone(b)
    b.op("mul_", reads=(2,), writes=(2,), line=71)
    b.op("relu", reads=(2,), line=72)
    b.op("relu", reads=(1,), frees=(2,), line=73)
    assert verdicts(b.trace()) == ["needed"]


def test_needed_clone_that_outlives_the_hunt():
    b = TraceBuilder()
    _clone(b, alive=True)
    b.op("relu", reads=(2,), line=71)
    assert verdicts(b.trace()) == ["needed"]


def test_repeat_is_not_proven_eliminable_but_names_expand():
    # An expanded view has stride 0: fine for sum, wrong for a consumer that views or writes it.
    b = TraceBuilder()
    b.storage(1)
    b.storage(2, nbytes=64, alive=False)
    b.copy("repeat", 1, 2, allocs=(2,), line=80, shape=(4, 4))
    b.op("sum", reads=(2,), line=81)
    c = only(b.trace())
    assert c.verdict == "needed"
    assert c.reason == (
        "neither the source (the buffer made before the hunt, first used by aten.repeat at t.py:80) nor this copy is written until it dies, but only an expanded (stride-0) view "
        "would replace the repeated data, and the trace cannot tell whether its consumer accepts one"
    )
    assert c.suggestion == "keep it, unless its consumer only reads it elementwise: then use expand"


# --- records without op facts ------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["device", "imported"])
def test_copies_without_op_records_are_needed(origin):
    b = TraceBuilder()
    b.storage(1)
    b.storage(2, alive=False)
    b.copy("copy_", 1, 2, line=90, origin=origin)  # even a dead store: no guessing from foreign ops
    c = only(b.trace())
    assert (c.verdict, c.reason) == ("needed", "no op records for this copy")


def test_dispatch_copy_missing_its_op_record_is_needed():
    b = TraceBuilder()
    b.storage(1)
    b.storage(2, alive=False)
    b.copy("copy_", 1, 2, line=90, record_op=False)
    assert only(b.trace()).reason == "no op records for this copy"


def test_graph_replay_shares_its_capture_time_verdict():
    b = TraceBuilder()
    _clone(b)
    b.op("relu", reads=(2,), line=71)
    b.op("relu", reads=(1,), frees=(2,), line=72)
    base = b.trace()
    replayed = replace(base.copies[0], origin="graph-replay", graph_replay=0)
    captured, replay = judge(with_copies(base, [base.copies[0], replayed])).read_copies()
    assert replay.verdict == captured.verdict == "defensive-clone"
    assert replay.reason == captured.reason + " (as at capture, #0)"
    assert captured.reason == ("neither the source (the buffer made before the hunt, first used by aten.clone at t.py:70) nor this copy "
                        "is written until it is freed (before aten.relu at t.py:72): an alias would do")


# --- engine properties -------------------------------------------------------------------------


def test_registry_order_is_verdict_strength():
    assert [v for v, _ in registered()] == [v for v in VERDICTS if v != "needed"]


def test_rule_decorator_rejects_unknown_needed_and_duplicate_verdicts():
    with pytest.raises(ValueError, match="unknown verdict 'bogus'"):
        rule("bogus")
    with pytest.raises(ValueError, match="unknown verdict 'needed'"):
        rule("needed")
    with pytest.raises(ValueError, match="already registered"):
        rule("noop")(lambda copy, ctx: None)


def test_a_rule_answering_for_another_verdict_is_an_error(monkeypatch):
    from copyhunt.analysis import rules as rules_mod

    monkeypatch.setitem(rules_mod._RULES, "noop", lambda copy, ctx: Finding("dead-store", "r", "s"))
    b = TraceBuilder()
    b.storage(1)
    b.copy("copy_", 1, 1, noop=True)
    with pytest.raises(ValueError, match="returned 'dead-store'"):
        run_rules(b.copies[0], TraceIndex(b.trace()))


def test_scan_limit_makes_rules_conservative(monkeypatch):
    # 5 writes to other bytes of the buffer come before the overwrite: past a limit of 3, "unknown".
    b = TraceBuilder()
    b.storage(1)
    b.storage(2, nbytes=64)
    b.copy("copy_", 1, 2, writes=((2, 0, 16),), line=10)
    for i in range(5):
        b.op("fill_", writes=((2, 16 + 8 * i, 8),), line=11)
    b.op("fill_", writes=((2, 0, 16),), line=12)
    b.op("sum", reads=(2,), line=13)
    assert verdicts(b.trace()) == ["dead-store"]
    monkeypatch.setattr(index_mod, "SCAN_LIMIT", 3)
    assert verdicts(b.trace()) == ["needed"]


def test_judge_is_deterministic_idempotent_and_ignores_op_order():
    b = TraceBuilder()
    _fresh(b)
    b.op("relu", reads=(4,), writes=(5,), allocs=(5,), frees=(3,), line=22)
    trace = b.trace()
    once = judge(trace)
    assert judge(trace) == once
    assert judge(once) == once
    shuffled = replace(trace, ops=tuple(reversed(trace.ops)))
    assert judge(shuffled).findings == once.findings


def test_judged_trace_round_trips_through_the_file(tmp_path):
    b = TraceBuilder()
    _fresh(b)
    b.op("relu", reads=(4,), frees=(3,), line=22)
    judged = judge(b.trace())
    path = save(judged, tmp_path / "t.json")
    assert load(path) == judged
    import json

    (finding,) = json.loads(path.read_text())["findings"]
    assert (finding["copy"], finding["verdict"]) == (0, "fresh-temporary")
    assert finding["reason"].startswith("source (a fresh 16 B buffer made by ")
    assert finding["suggestion"].startswith("let aten.mm at t.py:20")


def test_fresh_temporary_in_an_empty_buffer_filled_by_an_out_op():
    # result = torch.empty(...); torch.sum(w, dim=0, out=result); dst.copy_(result): the buffer was
    # allocated for this value (its allocation's bytes were never read), so it is a fresh buffer.
    b = TraceBuilder()
    b.storage(1, alive=False)
    b.storage(2)
    b.op("empty", writes=(1,), allocs=(1,), line=45)
    b.op("sum", reads=(3,), writes=(1,), line=46)  # sum.IntList_out: a pure full overwrite
    b.copy("copy_", 1, 2, line=47)
    b.op("relu", reads=(2,), frees=(1,), line=48)
    c = only(b.trace())
    assert c.reason == "source (a fresh 16 B buffer made by aten.sum at t.py:46) is read only by this copy, then freed (before aten.relu at t.py:48)"
    assert c.suggestion.startswith("let aten.sum at t.py:46 write straight into this copy's destination")


def test_fresh_temporary_filled_outside_the_dispatcher():
    # result = torch.empty(...); a raw Triton kernel fills it (invisible); dst.copy_(result)
    b = TraceBuilder()
    b.storage(1, alive=False)
    b.storage(2)
    b.op("empty", writes=(1,), allocs=(1,), line=44)
    b.copy("copy_", 1, 2, line=47)
    b.op("relu", reads=(2,), frees=(1,), line=48)
    c = only(b.trace())
    assert c.verdict == "fresh-temporary"
    assert c.reason == (
        "source (a 16 B buffer allocated by aten.empty at t.py:44 and filled outside PyTorch's dispatcher) "
        "is read only by this copy, then freed (before aten.relu at t.py:48)"
    )
    assert c.suggestion == (
        "hand this copy's destination to the code that allocates the source (aten.empty at t.py:44) and fills it "
        "(destination passing: out=/output=), then drop this copy"
    )


def test_needed_broadcast_copy_of_a_fresh_temporary():
    # out (16 B = 4 floats).copy_(t) with t a 1-element (4 B) fresh tensor: out holds t four times.
    b = TraceBuilder()
    b.storage(1, nbytes=4, alive=False)
    b.storage(2)
    b.op("sum", reads=(3,), writes=(1,), allocs=(1,), line=20)
    b.copy("copy_", 1, 2, line=21)
    b.op("relu", reads=(2,), frees=(1,), line=22)
    assert verdicts(b.trace()) == ["needed"]


def test_needed_indexed_write_of_a_fresh_temporary():
    # x[idx] = a * 2: the product cannot be written straight into scattered rows.
    b = TraceBuilder()
    b.storage(1, alive=False)
    b.storage(2, nbytes=64)
    b.op("mul", reads=(3,), writes=(1,), allocs=(1,), line=20)
    b.copy("index_put_", 1, 2, reads=(1, 4), writes=((2, 0, 64, False),), line=21)
    b.op("relu", reads=(2,), frees=(1,), line=22)
    assert verdicts(b.trace()) == ["needed"]


def test_repeat_of_a_fresh_temporary_is_not_destination_passing():
    b = TraceBuilder()
    b.storage(1, alive=False)
    b.storage(2, nbytes=64, alive=False)
    b.op("mul", reads=(3,), writes=(1,), allocs=(1,), line=20)
    b.copy("repeat", 1, 2, allocs=(2,), line=21, shape=(4, 4))
    b.op("sum", reads=(2,), frees=(1,), line=22)
    c = only(b.trace())
    assert [f.verdict for f in c.findings] == ["needed"]  # the expand explanation, not destination passing
    assert c.reason.endswith("the trace cannot tell whether its consumer accepts one")


# --- CUDA graphs: replays read and write unseen -------------------------------------------------


def _static_input_refill(captured: bool) -> Trace:
    """A graph reads static input #2 (captured mm); eager code refills #2 every step, then replays."""
    b = TraceBuilder()
    b.storage(2, device="cuda:0")
    b.op("mm", reads=(2,), writes=(3,), line=100, captured=captured)  # the capture (or an eager run)
    b.copy("copy_", 1, 2, line=101, src_device="cuda:0", dst_device="cuda:0")  # step 1: refill; replay (unseen)
    b.copy("copy_", 4, 2, line=101, src_device="cuda:0", dst_device="cuda:0")  # step 2: refill; replay (unseen)
    return b.trace()


def test_eager_copy_into_a_graph_input_is_not_a_dead_store():
    # Without the capture, step 1's refill really is overwritten unread (control)...
    assert verdicts(_static_input_refill(captured=False))[0] == "dead-store"
    # ...but a graph reads #2 at every replay, and replays leave no op records: keep it.
    refills = judge(_static_input_refill(captured=True)).read_copies()
    assert [(c.verdict, c.reason) for c in refills] == [
        ("needed", "a CUDA graph may read or write its buffers unseen (replays leave no op records)")
    ] * 2


def test_replays_of_a_graph_captured_elsewhere_make_device_storages_unjudgeable():
    for device, expected in (("cuda:0", "needed"), ("cpu", "dead-store")):
        b = TraceBuilder()
        b.storage(1, device=device)
        b.storage(2, device=device)
        b.copy("copy_", 1, 2, line=10, src_device=device, dst_device=device)
        b.op("fill_", writes=(2,), line=11)
        base = b.trace()
        replay = record(99, 16, src_device="cuda:0", dst_device="cuda:0", origin="graph-replay")
        judged = judge(with_copies(base, [*base.copies, replay])).read_copies()
        assert [c.verdict for c in judged] == [expected, "needed"]


def test_copies_inside_one_capture_are_judged_within_it():
    # Two captured MoE-like layers: result (#1/#4, freed) -> workspace #2 -> output (#3/#5).
    b = TraceBuilder()
    for sid in (1, 4):
        b.storage(sid, device="cuda:0", alive=False)
    b.storage(2, nbytes=64, device="cuda:0")
    kw = dict(src_device="cuda:0", dst_device="cuda:0", captured=True)
    b.op("experts", reads=(3,), writes=(1,), allocs=(1,), line=30, captured=True)
    b.copy("copy_", 1, 2, writes=((2, 0, 16),), line=31, **kw)
    b.copy("copy_", 2, 3, reads=((2, 0, 16),), frees=(1,), line=32, **kw)
    b.op("experts", reads=(3,), writes=(4,), allocs=(4,), line=30, captured=True)
    b.copy("copy_", 4, 2, writes=((2, 0, 16),), line=31, **kw)
    b.copy("copy_", 2, 5, reads=((2, 0, 16),), frees=(4,), line=32, **kw)
    b.op("add", reads=(5,), line=33)  # eager, after the capture ended
    # Layer 1's workspace value is overwritten inside the capture: proven at every replay.
    # Layer 2's survives the capture: what eager code does with it between replays is unseen.
    assert verdicts(b.trace()) == ["fresh-temporary", "fresh-temporary", "fresh-temporary", "needed"]


def test_producer_copy_filtered_out_of_the_trace_is_not_guessed():
    # x.to(bf16) (record dropped, e.g. by a kind filter) then copied into fp32: dtypes of the first
    # cast are unknown, so the rounding might be the point: not fresh-temporary.
    b = TraceBuilder()
    b.storage(2, nbytes=8, alive=False)
    b.copy("_to_copy", 1, 2, allocs=(2,), line=50, dtype="torch.bfloat16", src_dtype="torch.float32")
    b.copy("copy_", 2, 3, line=51, dtype="torch.float32", src_dtype="torch.bfloat16")
    b.op("relu", reads=(3,), frees=(2,), line=52)
    trace = b.trace()
    full = judge(trace).read_copies()
    assert [c.verdict for c in full] == ["needed", "needed"]  # lossy then widening: needed either way
    dropped = judge(with_copies(trace, trace.copies[1:])).read_copies()
    assert [c.verdict for c in dropped] == ["needed"]


def test_fresh_temporary_made_from_the_destination_by_an_elementwise_op_runs_in_place():
    # x.copy_(x * 2): mul reads x (#1) and makes tmp (#2); the copy writes tmp back into x.
    b = TraceBuilder()
    b.storage(2, alive=False)
    b.op("mul", reads=(1,), writes=(2,), allocs=(2,), line=20)
    b.copy("copy_", 2, 1, line=20)
    b.op("sum", reads=(1,), frees=(2,), line=21)
    c = only(b.trace())
    assert c.verdict == "fresh-temporary"
    assert c.reason == ("source (a 16 B buffer made by aten.mul at t.py:20 from the destination) is read only by this copy, "
                        "then freed (before aten.sum at t.py:21)")
    assert c.suggestion == (
        "compute it in place: the in-place variant of aten.mul at t.py:20 on the destination "
        "(e.g. x.mul_(2) for x.copy_(x * 2); only if it reads the destination in the same layout), then drop this copy"
    )


def test_needed_when_a_matmul_reads_the_destination_it_would_write():
    # x.copy_(x @ w): mm(x, w, out=x) would overwrite x while reading it.
    b = TraceBuilder()
    b.storage(3, alive=False)
    b.op("mm", reads=(1, 2), writes=(3,), allocs=(3,), line=20)
    b.copy("copy_", 3, 1, line=20)
    b.op("sum", reads=(1,), frees=(3,), line=21)
    assert verdicts(b.trace()) == ["needed"]
