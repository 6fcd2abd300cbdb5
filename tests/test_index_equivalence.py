"""The verdict index answers exactly as the plain walks it replaced (issue 12), and its cost per query
does not grow with the number of earlier accesses of a storage.

``tests/reference_index.py`` is the index as it was before: every query steps over the storage's events
one by one. It is the specification. Random traces (overlapping byte ranges, strided writes, frees,
allocations, CUDA-graph windows, ops sharing a seq) are asked every query both ways, with the default
scan limit and with a tiny one (so the limit's edge is exercised too), and judged both ways.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import reference_index

from copyhunt.analysis import index as index_mod
from copyhunt.analysis import verdicts as verdicts_mod
from copyhunt.analysis.index import Range, TraceIndex
from copyhunt.analysis.trust import OPEN, Window
from copyhunt.records import Access, CopyRecord, Frame, OpRecord, StorageInfo, Trace

SITE = Frame("/repo/t.py", 1, "f")
OPS = ("aten.mul.Tensor", "aten.add_.Tensor", "aten.copy_.default", "aten.clone.default", "aten.cat.default",
       "aten._to_copy.default", "aten.empty.memory_format", "aten.sum.IntList_out")
COPY_OPS = ("aten.copy_.default", "aten.clone.default", "aten.cat.default", "aten._to_copy.default")


def _access(rnd: random.Random, storage: int) -> Access:
    offset = rnd.choice((0, 0, 0, 8, 16, 24))
    nbytes = rnd.choice((8, 16, 32, 32, 32, 0)) if offset == 0 else rnd.choice((8, 16))
    return Access(storage, offset, nbytes, rnd.random() < 0.8)


def random_trace(rnd: random.Random, n_ops: int, n_storages: int = 4) -> Trace:
    """Ops with random accesses of a few 32-byte storages; some of them copies with copy records."""
    ops: list[OpRecord] = []
    copies: list[CopyRecord] = []
    graph = rnd.random() < 0.3
    for k in range(n_ops):
        seq = k if rnd.random() < 0.95 or not ops else ops[-1].seq  # now and then two ops share a seq
        name = rnd.choice(OPS)
        reads = tuple(_access(rnd, rnd.randrange(n_storages)) for _ in range(rnd.choice((0, 1, 1, 2, 3))))
        writes = tuple(_access(rnd, rnd.randrange(n_storages)) for _ in range(rnd.choice((0, 1, 1, 2))))
        allocs = tuple({w.storage for w in writes if rnd.random() < 0.25})
        frees = tuple(s for s in range(n_storages) if rnd.random() < 0.04)
        in_graph = graph and 0.3 * n_ops < k < 0.6 * n_ops
        is_copy = name in COPY_OPS and bool(reads) and bool(writes)
        ops.append(OpRecord(seq, name, reads, writes, allocs, frees, SITE, is_copy=is_copy, captured_in_graph=in_graph))
        if is_copy:
            src, dst = reads[0].storage, writes[0].storage
            copies.append(CopyRecord(
                seq=seq, op=name, kind="d2d", bytes=writes[0].nbytes, noop=rnd.random() < 0.05, src_device="cpu",
                dst_device="cpu", shape=(max(writes[0].nbytes, 4) // 4,), dtype=rnd.choice(("torch.float32", "torch.float16")),
                site=SITE, captured_in_graph=in_graph, src_dtype=rnd.choice((None, "torch.float32", "torch.float16")),
                src_contiguous=rnd.choice((True, True, False, None)), dst_contiguous=rnd.choice((True, True, False)),
                src_storage=src, dst_storage=dst,
                src_storages=tuple(a.storage for a in reads) if name == "aten.cat.default" else (),
            ))
            if graph and rnd.random() < 0.1:
                copies.append(replace(copies[-1], origin="graph-replay", graph_replay=0))
    storages = tuple(StorageInfo(s, rnd.choice(("cpu", "cuda:0")), 32, rnd.random() < 0.5) for s in range(n_storages))
    return Trace(copies=tuple(copies), ops=tuple(ops), storages=storages)


def _windows(rnd: random.Random, n: int) -> list[Window]:
    lo = rnd.randrange(n)
    return [OPEN, Window(lo, lo + rnd.randrange(1, 12), True), Window(None, None, True)]


def _queries(rnd: random.Random, trace: Trace, ctx) -> list:
    """Every query of the index with random arguments, answered by ``ctx``."""
    n = len(trace.ops) + 2
    out: list = []
    for storage in range(-1, 5):  # -1 and 4: storages no op touched
        out += [ctx.allocated_by(storage), ctx.writer_count(storage), ctx.first_use(storage)]
        for _ in range(12):
            start = rnd.choice((0, 0, 4, 8, 16, 24))
            rng = Range(start, start + rnd.choice((0, 4, 8, 16, 32)))
            a = rnd.randrange(-2, n)
            b = a + rnd.randrange(0, n)
            for win in _windows(rnd, n):
                out += [
                    ctx.fate(storage, rng, a, win=win),
                    ctx.death(storage, a, win=win),
                    ctx.history(storage, rng, b, win=win),
                    ctx.first_write(storage, rng, a, b, win=win),
                    ctx.first_write(storage, rng, a, None, win=win),
                    ctx.touched(storage, rng, a, b, ignore=rnd.choice((None, a + 1, b - 1)), win=win),
                ]
    return out


@pytest.mark.parametrize("limit", [4096, 3])
def test_every_query_answers_as_the_plain_walk(monkeypatch, limit):
    monkeypatch.setattr(index_mod, "SCAN_LIMIT", limit)
    monkeypatch.setattr(reference_index, "SCAN_LIMIT", limit)
    for case in range(150):
        trace = random_trace(random.Random(case), n_ops=random.Random(case).randrange(5, 60))
        new, old = TraceIndex(trace), reference_index.TraceIndex(trace)
        got = _queries(random.Random(1000 + case), trace, new)
        want = _queries(random.Random(1000 + case), trace, old)
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            assert tuple(g) == tuple(w) if isinstance(w, tuple) else g == w, f"trace {case}, query {k}: {g} != {w}"


@pytest.mark.parametrize("limit", [4096, 3])
def test_judge_gives_the_plain_walks_verdicts(monkeypatch, limit):
    monkeypatch.setattr(index_mod, "SCAN_LIMIT", limit)
    monkeypatch.setattr(reference_index, "SCAN_LIMIT", limit)
    judged = 0
    for case in range(150):
        trace = random_trace(random.Random(case), n_ops=random.Random(case).randrange(5, 80))
        new = verdicts_mod.judge(trace).findings
        with monkeypatch.context() as m:
            m.setattr(verdicts_mod, "TraceIndex", reference_index.TraceIndex)
            old = verdicts_mod.judge(trace).findings
        assert new == old, f"trace {case}"
        judged += sum(1 for found in (new or {}).values() if found[0].verdict != "needed")
    assert judged > 20  # the random traces do exercise the rules that find copies eliminable


def _hot_reads(n: int) -> Trace:
    """A tensor (storage 0) read by every op; every 10th op clones it (the issue's "hot" pattern)."""
    ops, copies = [], []
    storages = [StorageInfo(0, "cpu", 64, True)]
    ops.append(OpRecord(0, "aten.randn.default", writes=(Access(0, 0, 64),), allocs=(0,), site=SITE))
    for seq in range(1, n):
        out = seq
        storages.append(StorageInfo(out, "cpu", 64, False))
        clone = seq % 10 == 0
        name = "aten.clone.default" if clone else "aten.mul.Tensor"
        ops.append(OpRecord(seq, name, (Access(0, 0, 64),), (Access(out, 0, 64),), (out,), site=SITE, is_copy=clone))
        if clone:
            copies.append(CopyRecord(seq=seq, op=name, kind="d2d", bytes=64, noop=False, src_device="cpu", dst_device="cpu",
                                     shape=(16,), dtype="torch.float32", site=SITE, src_contiguous=True,
                                     dst_contiguous=True, src_storage=0, dst_storage=out))
    return Trace(copies=tuple(copies), ops=tuple(ops), storages=tuple(storages))


def _slices(n: int) -> Trace:
    """A KV cache (storage 0): each step writes a new slice by a copy and reads every slice so far."""
    ops, copies = [], []
    storages = [StorageInfo(0, "cpu", 16 * n, True)]
    for step in range(n):
        kv = step + 1
        storages.append(StorageInfo(kv, "cpu", 16, False))
        ops.append(OpRecord(3 * step, "aten.mm.default", writes=(Access(kv, 0, 16),), allocs=(kv,), site=SITE))
        seq = 3 * step + 1
        ops.append(OpRecord(seq, "aten.copy_.default", (Access(kv, 0, 16),), (Access(0, 16 * step, 16),), site=SITE, is_copy=True))
        copies.append(CopyRecord(seq=seq, op="aten.copy_.default", kind="d2d", bytes=16, noop=False, src_device="cpu",
                                 dst_device="cpu", shape=(4,), dtype="torch.float32", site=SITE, src_contiguous=True,
                                 dst_contiguous=True, src_storage=kv, dst_storage=0))
        ops.append(OpRecord(3 * step + 2, "aten.bmm.default", (Access(0, 0, 16 * (step + 1)), Access(0, 16 * step, 16, False)),
                            frees=(kv,), site=SITE))
    return Trace(copies=tuple(copies), ops=tuple(ops), storages=tuple(storages))


def _work_per_copy(trace: Trace) -> float:
    ctx = TraceIndex(trace)
    from copyhunt.analysis.rules import run_rules

    for c in trace.copies:
        run_rules(c, ctx)
    return ctx.work / len(trace.copies)


@pytest.mark.parametrize("make", [_hot_reads, _slices])
def test_work_per_copy_stays_flat_as_the_trace_grows(make):
    # The plain walks stepped over every earlier read of the hot tensor (up to SCAN_LIMIT = 4096
    # events per query): their work per copy grew with the trace. Here 8x the ops may cost a few
    # more tree levels per query, never 8x.
    small, big = _work_per_copy(make(1000)), _work_per_copy(make(8000))
    assert big < 1.5 * small + 40, (small, big)
    assert big < 200, big
