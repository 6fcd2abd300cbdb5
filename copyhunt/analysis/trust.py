"""Which events of a trace a walk may trust for one copy, given CUDA graphs (whose replays leave no records)."""

from __future__ import annotations

from typing import Mapping, NamedTuple

from copyhunt.records import CopyRecord, OpRecord, Trace


class Window(NamedTuple):
    """The part of the trace whose events a walk may trust for one copy.

    An eager copy trusts the whole trace but no storage a CUDA graph touches (replays read and
    write those unseen). A copy captured into a graph trusts only its run of captured ops: what
    happens after the capture ends says nothing about what happens after each replay.
    """

    lo: int | None  # first trusted seq (None: no bound)
    hi: int | None  # last trusted seq (None: no bound)
    captured: bool


OPEN = Window(None, None, False)


def opaque_storages(trace: Trace, dispatch_copies: Mapping[int, CopyRecord]) -> tuple[frozenset[int], frozenset[int]]:
    """(storages any walk distrusts, storages only walks of eager copies distrust).

    A ``graph.replay()`` emits no dispatch events: every storage an op captured into a graph
    touches is read and written again at each replay, unseen by the eager ops around it. When the
    trace holds replays of a graph captured before the hunt, which storages it touches is unknown:
    every storage on a non-CPU device may be one of them (a static input buffer, say).
    """
    graph: set[int] = set()
    for op in trace.ops:
        if op.captured_in_graph:
            graph.update(a.storage for a in op.reads)
            graph.update(a.storage for a in op.writes)
    elsewhere = any(
        c.origin == "graph-replay" and not (c.seq in dispatch_copies and dispatch_copies[c.seq].captured_in_graph)
        for c in trace.copies
    )
    foreign = {s.id for s in trace.storages if not s.device.startswith("cpu")} if elsewhere else set()
    return frozenset(foreign), frozenset(graph)


def captured_runs(ops: list[OpRecord]) -> dict[int, tuple[int, int]]:
    """seq -> (first seq, last seq) of the run of consecutive captured ops it belongs to."""
    runs: dict[int, tuple[int, int]] = {}
    run: list[int] = []
    for op in [*ops, None]:
        if op is not None and op.captured_in_graph:
            run.append(op.seq)
            continue
        for seq in run:
            runs[seq] = (run[0], run[-1])
        run = []
    return runs


def inside(win: Window, after: int, before: int | None) -> bool:
    """True when the open interval ``(after, before)`` lies inside the window."""
    if win.lo is not None and after + 1 < win.lo:
        return False
    return win.hi is None or (before is not None and before - 1 <= win.hi)
