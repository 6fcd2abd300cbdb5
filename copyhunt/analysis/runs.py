"""Runs of several processes: load a run folder (or several trace files) and merge its traces by site.

A run is the parent's trace and the traces of the children it followed (``copyhunt.follow``): one file
per torch.distributed rank (``rank0.json``) or per process (``pid123.json``) in a run folder, listed
in the parent's ``meta.children``. Each trace is a *member*, labelled ``parent``, ``rank<R>`` or
``pid<N>``. The merge groups copies by site key (``copyhunt.analysis.diff.SiteKey``: file, line,
function, op, kind) with a count, bytes and device time per member, the totals, and the imbalance
across ranks (largest count over smallest). Collective calls (``c10d`` ops: all_reduce, all_gather...)
are rows of their own, never copies. Pure functions over loaded traces; nothing here prints.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from copyhunt.analysis.diff import UNKNOWN_FILE, SiteKey, site_key
from copyhunt.errors import TraceFormatError
from copyhunt.records import OpRecord, Trace, TraceMeta, moved_bytes
from copyhunt.text import display_path
from copyhunt.view import TraceView


@dataclass(frozen=True)
class Member:
    """One process's trace in a run."""

    label: str  # "parent", "rank0", "rank0.pid7", "pid123"
    path: str
    trace: Trace

    @property
    def rank(self) -> int | None:
        """The torch.distributed rank, for a rank's own trace (not a child that inherited it)."""
        return self.trace.meta.rank if self.label.startswith("rank") and "." not in self.label else None


@dataclass(frozen=True)
class Run:
    """The traces of one run, parent first, then ranks in order, then other processes."""

    members: tuple[Member, ...]
    source: str  # what was read, for headers ("copyhunt-train.123/")

    def member(self, rank: int) -> Member:
        """The member of ``rank``; TraceFormatError naming the ranks there are."""
        for m in self.members:
            if m.rank == rank:
                return m
        ranks = [str(m.rank) for m in self.members if m.rank is not None]
        raise TraceFormatError(
            f"{self.source}: no trace of rank {rank} (ranks: {', '.join(ranks) if ranks else 'none; no torch.distributed rank ran'})"
        )

    @property
    def is_single(self) -> bool:
        """One trace and no children: shown the usual way."""
        return len(self.members) == 1


def label_of(path: Path, is_parent: bool) -> str:
    """``parent``, else the file's name without ``.json``: ``rank<R>``, ``rank<R>.pid<N>`` (a rank's own child), ``pid<N>``."""
    if is_parent:
        return "parent"
    return path.name[:-5] if path.name.endswith(".json") else path.name


def load_run(paths: Sequence[str | os.PathLike[str]], read: Callable[[Path], Trace] | None = None) -> Run:
    """Read a run: a run folder, a trace file with children, or several trace files.

    A folder gives every ``*.json`` in it, plus the parent trace next to it (``<folder>.json``) when
    that one lists them; a trace file gives itself and the children its ``meta.children`` lists.
    ``read`` reads one file (default: ``copyhunt.analysis.read_trace``, judged).
    """
    if read is None:
        from copyhunt.analysis import read_trace as read
    if not paths:
        raise TraceFormatError("no trace given")
    seen: dict[Path, Member] = {}
    parent_paths: set[Path] = set()

    def add(p: Path, is_parent: bool = False) -> Trace:
        key = p.resolve()
        if key in seen:
            return seen[key].trace
        trace = read(p)
        seen[key] = Member(label_of(p, is_parent), str(p), trace)
        return trace

    def add_with_children(p: Path) -> None:
        trace = add(p)
        if trace.meta.children:
            parent_paths.add(p.resolve())
            seen[p.resolve()] = replace(seen[p.resolve()], label="parent")
            for rel in trace.meta.children:
                child = p.parent / rel
                if child.exists():
                    add(child)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            sibling = p.with_name(p.name.rstrip("/") + ".json")
            if sibling.is_file():
                try:
                    add_with_children(sibling)
                except TraceFormatError:
                    pass  # not a trace of ours: the folder stands alone
            files = sorted(f for f in p.glob("*.json") if not f.name.startswith("."))
            if not files and len(seen) == 0:
                raise TraceFormatError(f"{p}: a folder without trace files (*.json)")
            for f in files:
                add(f)
        else:
            add_with_children(p)
    source = ", ".join(str(p) for p in paths)
    return Run(tuple(sorted(seen.values(), key=_order)), source)


def _order(m: Member) -> tuple[int, int, str]:
    if m.label == "parent":
        return (0, 0, "")
    if m.rank is not None:
        return (1, m.rank, m.label)
    return (2, m.trace.meta.pid or 0, m.label)  # other processes in the order they were started (pid)


# --- merging ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One site in one member: copies (or calls), bytes, device time."""

    count: int = 0
    bytes: int = 0
    device_us: float | None = None


@dataclass(frozen=True)
class MergedRow:
    """One site across the run: a cell per member (in ``MergedRun.labels`` order) and the totals."""

    key: SiteKey  # for collectives ``kind`` is "collective"
    cells: tuple[Cell, ...]
    eliminable: int = 0

    @property
    def count(self) -> int:
        """Copies (calls) of every member."""
        return sum(c.count for c in self.cells)

    @property
    def bytes(self) -> int:
        """Bytes of every member."""
        return sum(c.bytes for c in self.cells)

    @property
    def device_us(self) -> float | None:
        """Device time of every member; None when no member timed this site."""
        times = [c.device_us for c in self.cells if c.device_us is not None]
        return sum(times) if times else None


@dataclass(frozen=True)
class MemberTotals:
    """One member's totals, for the header."""

    label: str
    path: str
    meta: TraceMeta
    copies: int
    bytes: int
    device_us: float | None
    collectives: int


@dataclass(frozen=True)
class MergedRun:
    """A run merged by site: rows of copies, rows of collective calls, per-member totals."""

    source: str
    labels: tuple[str, ...]
    ranked: tuple[int, ...]  # positions of the members that are ranks (for the imbalance)
    members: tuple[MemberTotals, ...]
    rows: tuple[MergedRow, ...]  # largest bytes first
    collectives: tuple[MergedRow, ...]
    judged: bool

    def imbalance(self, row: MergedRow) -> float | None:
        """Largest count over smallest across the ranks (inf when a rank made none); None with < 2 ranks."""
        if len(self.ranked) < 2:
            return None
        counts = [row.cells[i].count for i in self.ranked]
        hi, lo = max(counts), min(counts)
        if hi == 0:
            return None
        return math.inf if lo == 0 else hi / lo

    @property
    def copies(self) -> int:
        """Copies of the whole run."""
        return sum(m.copies for m in self.members)

    @property
    def bytes(self) -> int:
        """Bytes of the whole run (noop copies move none)."""
        return sum(m.bytes for m in self.members)


#: The op namespace of torch.distributed's collectives as the dispatcher sees them.
COLLECTIVE_PREFIX = "c10d."


def collective_calls(trace: Trace) -> tuple[OpRecord, ...]:
    """The collective calls of a trace (op records of ``c10d`` ops): all_reduce, all_gather, broadcast..."""
    return tuple(o for o in trace.ops if o.op.startswith(COLLECTIVE_PREFIX))


def collective_bytes(op: OpRecord) -> int:
    """Bytes of the tensors a collective call's op record lists (each storage range once): the tensor of
    an all_reduce / broadcast, the input of an all_gather (its nested output list is not recorded)."""
    seen = {(a.storage, a.offset, a.nbytes) for a in (*op.reads, *op.writes)}
    return sum(n for _, _, n in seen)


def merge_run(run: Run, views: Sequence[TraceView] | None = None, root: str | os.PathLike[str] | None = None) -> MergedRun:
    """Merge ``run`` by site; ``views`` (one per member, same order) narrow the copies to a selection."""
    labels = tuple(m.label for m in run.members)
    n = len(labels)
    copies_of = [v.copies for v in views] if views is not None else [m.trace.read_copies() for m in run.members]
    table: dict[SiteKey, list[list]] = {}
    elim: dict[SiteKey, int] = {}
    for i, copies in enumerate(copies_of):
        for c in copies:
            k = site_key(c, root)
            cells = table.setdefault(k, [[0, 0, None] for _ in range(n)])
            cell = cells[i]
            cell[0] += 1
            cell[1] += c.moved_bytes
            if c.device is not None:
                cell[2] = (cell[2] or 0.0) + c.device.time_us
            if c.verdict is not None and c.verdict != "needed":
                elim[k] = elim.get(k, 0) + 1
    coll: dict[SiteKey, list[list]] = {}
    for i, m in enumerate(run.members):
        for o in collective_calls(m.trace):
            site = o.site
            k = (SiteKey(display_path(site.file, root), site.line, site.function, o.op, "collective") if site is not None
                 else SiteKey(UNKNOWN_FILE, 0, "", o.op, "collective"))
            cells = coll.setdefault(k, [[0, 0, None] for _ in range(n)])
            cells[i][0] += 1
            cells[i][1] += collective_bytes(o)

    def rows(t: dict[SiteKey, list[list]], with_elim: bool) -> tuple[MergedRow, ...]:
        out = [MergedRow(k, tuple(Cell(*c) for c in cells), elim.get(k, 0) if with_elim else 0) for k, cells in t.items()]
        return tuple(sorted(out, key=lambda r: (-r.bytes, -r.count, r.key)))

    totals = []
    for i, m in enumerate(run.members):
        copies = copies_of[i]
        times = [c.device.time_us for c in copies if c.device is not None]
        totals.append(MemberTotals(m.label, m.path, m.trace.meta, len(copies), moved_bytes(copies),
                                   sum(times) if times else None, len(collective_calls(m.trace))))
    ranked = tuple(i for i, m in enumerate(run.members) if m.rank is not None)
    return MergedRun(run.source, labels, ranked, tuple(totals), rows(table, True), rows(coll, False),
                     all(m.trace.judged for m in run.members))


def combined_trace(run: Run) -> Trace:
    """Every member's copies in one trace (timings, findings and verifications re-keyed): totals for
    ``diff`` and budget rules over the whole run. Op records are left out (storage ids are per process)."""
    members = run.members
    copies: list = []
    timings: dict = {}
    findings: dict = {}
    proofs: dict = {}
    notes: list[str] = []
    for m in members:
        for c in m.trace.read_copies():
            i = len(copies)
            copies.append(c.record)
            if c.device is not None:
                timings[i] = c.device
            if c.findings:
                findings[i] = c.findings
            if c.verification is not None:
                proofs[i] = c.verification
        notes.extend(f"{m.label}: {n}" for n in m.trace.meta.notes)
    incomplete = [m for m in members if not m.trace.meta.complete]
    error = "; ".join(f"{m.label}: {m.trace.meta.error or 'incomplete'}" for m in incomplete) or None
    first = members[0].trace.meta
    meta = replace(first, complete=not incomplete, error=error, notes=tuple(notes), children=(),
                   view={}, ops_complete=False)
    judged = all(m.trace.judged for m in members)
    return Trace(meta=meta, copies=tuple(copies), timings=timings, findings=findings if judged else None,
                 verifications=proofs)


def pick(run: Run, rank: int | None) -> Trace:
    """The trace ``--rank R`` names, or the whole run combined (one trace as it is)."""
    if rank is not None:
        return run.member(rank).trace
    return run.members[0].trace if run.is_single else combined_trace(run)

