"""CUDA-graph replay accounting: map each node a ``replay()`` executed to the launch that captured it.

A replay emits no dispatch events and its GPU events carry no ``External id``: only the
``correlation`` of the ``cudaGraphLaunch`` that ran them. torch 2.11 / CUDA 13.0 (the lent GPUs)
expose no graph node ids in the trace (``torch.cuda.graph(enable_annotations=True)`` arrived with
torch >= 2.12 and CUDA >= 13.1), so this module uses the documented fallback:

1. capture windows: the launches (``cudaLaunchKernel``, ``cudaMemcpyAsync``...) a thread made
   between ``cudaStreamBeginCapture`` and ``cudaStreamEndCapture``, in launch order; each still
   carries the ``External id`` of the cpu_op that made it, so it can be joined like eager work;
2. replays: the GPU events sharing one ``cudaGraphLaunch`` correlation, ordered by start time;
3. a replay belongs to the captured graph whose node-type sequence (kernel / memcpy / memset)
   it reproduces; node i of the replay is launch i of the capture. When the sequences differ
   (a multi-stream graph whose branches interleave differently), only the copy nodes are paired,
   in order, and a note says so.

Where the graph node ids exist (``graph node id`` arg), they are preferred for the pairing.
Standard library only; pure functions over ``KinetoTrace``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from copyhunt.kineto.events import KEvent, copy_kind, launch_type, node_type
from copyhunt.kineto.trace import KinetoTrace

_BEGIN = ("cudaStreamBeginCapture", "cudaStreamBeginCaptureToGraph", "hipStreamBeginCapture")
_END = ("cudaStreamEndCapture", "hipStreamEndCapture")
_GRAPH_LAUNCH = ("cudaGraphLaunch", "hipGraphLaunch", "cuGraphLaunch")


@dataclass(frozen=True)
class CapturedGraph:
    """Launches recorded while one thread captured a graph, in launch order."""

    index: int  # order of capture in the trace
    tid: object
    begin_us: float
    end_us: float
    launches: tuple[KEvent, ...]

    @property
    def signature(self) -> tuple[str, ...]:
        """Node types in launch order (what a replay should reproduce)."""
        return tuple(launch_type(e) or "kernel" for e in self.launches)


@dataclass(frozen=True)
class ReplayedNode:
    """One GPU event executed by a graph replay, with the capture-time launch it came from."""

    event: KEvent
    replay: int  # 0-based replay index of its graph (per graph, in trace order)
    graph: int | None  # CapturedGraph.index, None when the capture is not in the trace
    launch: KEvent | None  # capture-time runtime launch (carries the cpu_op External id)


@dataclass(frozen=True)
class ReplayAccount:
    """Everything the replay matcher found, plus plain notes for the reader."""

    graphs: tuple[CapturedGraph, ...]
    nodes: tuple[ReplayedNode, ...]
    notes: tuple[str, ...]

    def copies(self) -> list[ReplayedNode]:
        """Only the replayed nodes that copy data (memcpy nodes and copy kernels)."""
        return [n for n in self.nodes if copy_kind(n.event) is not None]


def captured_graphs(kt: KinetoTrace) -> list[CapturedGraph]:
    """Find every capture window in the trace and the launches made inside it."""
    graphs: list[CapturedGraph] = []
    open_at: dict[object, float] = {}
    windows: list[tuple[object, float, float]] = []
    for e in kt.runtime:
        if e.name in _BEGIN:
            open_at[e.tid] = e.ts
        elif e.name in _END and e.tid in open_at:
            windows.append((e.tid, open_at.pop(e.tid), e.end))
    by_tid: dict[object, list[KEvent]] = {}
    for e in kt.runtime:  # already sorted by start time
        by_tid.setdefault(e.tid, []).append(e)
    starts = {tid: [e.ts for e in evs] for tid, evs in by_tid.items()}
    for i, (tid, t0, t1) in enumerate(sorted(windows, key=lambda w: w[1])):
        evs = by_tid.get(tid, [])
        # bisect to the window: a trace of a serving engine holds many captures and millions of calls
        lo, hi = bisect.bisect_left(starts[tid], t0), bisect.bisect_right(starts[tid], t1)
        launches = tuple(e for e in evs[lo:hi] if launch_type(e) is not None)
        graphs.append(CapturedGraph(index=i, tid=tid, begin_us=t0, end_us=t1, launches=launches))
    return graphs


def _replay_groups(kt: KinetoTrace) -> list[tuple[KEvent, list[KEvent]]]:
    """(cudaGraphLaunch, GPU events it ran ordered by start) for every replay in the trace."""
    launches = {e.correlation: e for e in kt.runtime if e.name in _GRAPH_LAUNCH and e.correlation is not None}
    groups: dict[int, list[KEvent]] = {c: [] for c in launches}
    for g in kt.gpu:
        c = g.correlation
        if c in groups and g.external_id is None:
            groups[c].append(g)
    out = [(launches[c], sorted(evs, key=lambda e: e.ts)) for c, evs in groups.items() if evs]
    out.sort(key=lambda p: p[0].ts)
    return out


def _pick_graph(sig: tuple[str, ...], before: float, graphs: list[CapturedGraph]) -> CapturedGraph | None:
    """The captured graph a replay reproduces: same node-type sequence, latest capture before it."""
    same = [g for g in graphs if g.signature == sig and g.end_us <= before]
    if same:
        return same[-1]
    # Same multiset of node types: a multi-stream graph whose branches ran interleaved.
    loose = [g for g in graphs if sorted(g.signature) == sorted(sig) and g.end_us <= before]
    return loose[-1] if loose else None


def account_replays(kt: KinetoTrace) -> ReplayAccount:
    """Pair every replayed GPU event with its capture-time launch (see the module docstring)."""
    graphs = captured_graphs(kt)
    nodes: list[ReplayedNode] = []
    notes: list[str] = []
    replay_count: dict[int | None, int] = {}
    unmatched = 0
    reordered = 0
    for launch, events in _replay_groups(kt):
        sig = tuple(node_type(e) for e in events)
        g = _pick_graph(sig, launch.ts, graphs)
        key = None if g is None else g.index
        r = replay_count.get(key, 0)
        replay_count[key] = r + 1
        if g is None:
            unmatched += 1
            nodes.extend(ReplayedNode(event=e, replay=r, graph=None, launch=None) for e in events)
            continue
        by_node_id = _pair_by_node_id(events, g)
        if by_node_id is not None:
            nodes.extend(ReplayedNode(event=e, replay=r, graph=g.index, launch=l) for e, l in by_node_id)
        elif g.signature == sig:
            nodes.extend(ReplayedNode(event=e, replay=r, graph=g.index, launch=l) for e, l in zip(events, g.launches))
        else:
            # Branches interleaved: pair copy nodes in order, leave the rest unpaired.
            reordered += 1
            cap_copies = [l for l in g.launches if launch_type(l) == "memcpy"]
            rep_copies = [e for e in events if node_type(e) == "memcpy"]
            pair = dict(zip(map(id, rep_copies), cap_copies))
            nodes.extend(ReplayedNode(event=e, replay=r, graph=g.index, launch=pair.get(id(e))) for e in events)
    if unmatched:
        notes.append(
            f"{unmatched} CUDA-graph replay(s) ran a graph captured outside the traced region: "
            "their copies are listed without source lines (capture the graph inside the traced block to attribute them)"
        )
    if reordered:
        notes.append(
            f"{reordered} replay(s) ran graph nodes in another order than captured (multi-stream graph): "
            "memcpy nodes were paired in order, copy kernels on other branches may be unattributed"
        )
    return ReplayAccount(graphs=tuple(graphs), nodes=tuple(nodes), notes=tuple(notes))


def _pair_by_node_id(events: list[KEvent], g: CapturedGraph) -> list[tuple[KEvent, KEvent | None]] | None:
    """Pair by ``graph node id`` when both sides carry it (torch >= 2.12 with annotations)."""
    if not events or any("graph node id" not in e.args for e in events):
        return None
    by_id = {l.args.get("graph node id"): l for l in g.launches if "graph node id" in l.args}
    if not by_id:
        return None
    return [(e, by_id.get(e.args["graph node id"])) for e in events]
