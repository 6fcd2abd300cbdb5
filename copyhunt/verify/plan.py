"""What re-running a site with its copies elided means, per verdict (pure: judged trace in, intents out).

One site is one source line: every copy judged eliminable there is elided in the same re-run, the
way its suggestion says (``docs/verdicts.md``, "Proof by re-execution"):

- ``noop``: skip the call (PyTorch did no work).
- ``dead-store``: run the copy, then overwrite what it wrote with a value that differs in every
  element (its bits inverted): anything that reads those bytes before they are overwritten or freed
  sees the difference.
- ``fresh-temporary``: the producer writes the destination. Right after the producer runs, its value
  is set aside and its own buffer is overwritten with inverted bits (nobody else may read it), and
  the value is written into the destination as soon as the destination exists (nobody may touch it
  in between); the copy is then skipped (or, when it makes its destination, run from the set-aside
  value). Every source of a cat gets this.
- ``defensive-clone``: return a view of the source instead of the copy.
- ``round-trip``: skip the copy back (the destination holds the values), or return the original.
- ``chained``: the intermediate is never made: its buffer is inverted right after the first copy,
  and the second copy reads the original (as it was at the first copy) instead.

Copies the re-run cannot elide faithfully are "not testable", with why.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from copyhunt.analysis.index import TraceIndex
from copyhunt.analysis.op_facts import ALLOC_ONLY_OPS
from copyhunt.analysis.sources import Source, live_sources
from copyhunt.text import op_name
from copyhunt.records import Copy, CopyRecord, Frame, Trace, is_eliminable

#: Copy ops whose destination and sources the re-run knows how to find (see ``elide.copy_slots``).
ELIDABLE_OPS = frozenset({
    "copy_", "clone", "_to_copy", "cat", "stack", "repeat", "constant_pad_nd", "narrow_copy", "expand_copy",
})


@dataclass(frozen=True)
class Intent:
    """One copy elided one way. ``how`` is the verdict's action; seqs name the ops involved."""

    how: str  # "skip", "invert", "alias", "redirect", "back-skip", "back", "chain"
    copy: int  # seq of the copy op
    copy_op: str  # its op name as traced ("aten.copy_.default"): the re-run checks it meets the same op
    source: int = 1  # 1-based position of the source among the copy's sources (cat)
    other: int | None = None  # producer (redirect) or first copy (back, chain)
    other_op: str | None = None
    begin: int | None = None  # redirect: the op that began the value when several ops wrote it


@dataclass(frozen=True)
class SitePlan:
    """The copies of one site judged eliminable, and how a re-run elides them (or why it cannot)."""

    site: Frame | None
    key: str  # "path:line function" (Frame.short) or "(no source site)"
    copies: tuple[Copy, ...]  # read-side copies: each knows its key (position) and verdict
    intents: tuple[Intent, ...] = ()
    untestable: str | None = None  # why no re-run can test this site

    @property
    def seqs(self) -> frozenset[int]:
        """Every op the intents touch (the probe run describes their tensors)."""
        out: set[int] = set()
        for i in self.intents:
            out.update(s for s in (i.copy, i.other, i.begin) if s is not None)
        return frozenset(out)


@dataclass
class _Site:
    site: Frame | None
    copies: list[Copy] = field(default_factory=list)


def plan_sites(trace: Trace) -> list[SitePlan]:
    """One plan per source site that has eliminable copies, in trace order of their first copy."""
    ctx = TraceIndex(trace)
    threads = {o.thread for o in trace.ops}
    sites: dict[str, _Site] = {}
    for c in trace.read_copies():
        if is_eliminable(c.verdict):
            key = c.site.short() if c.site is not None else "(no source site)"
            sites.setdefault(key, _Site(c.site)).copies.append(c)
    plans = []
    for key, s in sites.items():
        intents: list[Intent] = []
        why: str | None = None
        if len(threads) > 1:
            why = "the program runs ops on several threads: their order is not reproducible"
        for c in s.copies:
            if why is not None:
                break
            got = _intents(c, ctx)
            if isinstance(got, str):
                why = f"copy #{c.seq} ({c.verdict}): {got}"
            else:
                intents.extend(got)
        plans.append(SitePlan(s.site, key, tuple(s.copies), () if why else tuple(intents), why))
    return plans


def _intents(c: Copy, ctx: TraceIndex) -> list[Intent] | str:
    """How to elide one copy, or why the re-run cannot."""
    if c.origin != "dispatch" or ctx.op(c.seq) is None:
        return "no op record of its own (seen only by the device profiler or imported): nothing to re-run"
    if c.captured_in_graph:
        return "captured into a CUDA graph: its replays run outside the dispatcher"
    name = op_name(c.op)
    rec = c.record  # the rules' helpers take captured records
    if name not in ELIDABLE_OPS:
        return f"the re-run has no way to elide {name}"
    v = c.verdict
    if v == "noop":
        return [Intent("skip", c.seq, c.op)] if name == "copy_" else "a no-op copy other than copy_"
    if v == "dead-store":
        return [Intent("invert", c.seq, c.op)]
    if v == "defensive-clone":
        srcs = live_sources(rec, ctx)
        if not srcs or len(srcs) != 1:
            return "no single source to alias"
        return [Intent("alias", c.seq, c.op, srcs[0].position)]
    if v == "fresh-temporary":
        return _redirects(rec, ctx)
    if v == "round-trip":
        return _back(rec, ctx)
    if v == "chained":
        srcs = live_sources(rec, ctx)
        first = _first_copy(rec, ctx, srcs)
        if first is None or srcs is None:
            return "the first copy of the chain is not in the trace"
        return [Intent("chain", c.seq, c.op, srcs[0].position, first.seq, first.op)]
    return f"no re-run for verdict {v!r}"


def _redirects(c: CopyRecord, ctx: TraceIndex) -> list[Intent] | str:
    srcs = live_sources(c, ctx)
    if not srcs:
        return "its sources are not in the trace"
    for a, b in itertools.combinations(srcs, 2):
        if a.storage == b.storage and a.rng.overlaps(b.rng.start, b.rng.end):
            return f"sources {a.position} and {b.position} are the same value: one producer cannot write both slices"
    out = []
    for src in srcs:
        # The producer is the source's last writer, found from the trace alone: the re-run tests the
        # claim, it does not take the rules' word for it.
        h = ctx.history(src.storage, src.rng, c.seq, win=ctx.window(c))
        if h.producer is None:
            return f"source {src.position} was not written inside the trace: no producer to redirect"
        prod = ctx.op(h.producer)
        if prod is None:
            return "its producer has no op record"
        if op_name(prod.op) in ALLOC_ONLY_OPS:
            return "its source is filled outside PyTorch's dispatcher: the re-run cannot move that write"
        # Several ops built the value (zeros, then index_add_): the destination is inverted when the
        # value begins (nobody may read it from there) and gets the value after the last write.
        begin = h.start if h.start is not None and h.start != prod.seq else None
        out.append(Intent("redirect", c.seq, c.op, src.position, prod.seq, prod.op, begin))
    return out


def _back(c: CopyRecord, ctx: TraceIndex) -> list[Intent] | str:
    srcs = live_sources(c, ctx)
    first = _first_copy(c, ctx, srcs)
    if first is None:
        return "the copy out of the original is not in the trace"
    orig = live_sources(first, ctx)
    if not orig or len(orig) != 1:
        return "the original is not a single buffer"
    if c.dst_storage == orig[0].storage:
        return [Intent("back-skip", c.seq, c.op)]  # written back into the original: it holds the values
    return [Intent("back", c.seq, c.op, 1, first.seq, first.op)]


def _first_copy(c: CopyRecord, ctx: TraceIndex, srcs: tuple[Source, ...] | None) -> CopyRecord | None:
    """The earlier copy that made this copy's (single) source."""
    if not srcs or len(srcs) != 1:
        return None
    h = ctx.history(srcs[0].storage, srcs[0].rng, c.seq, win=ctx.window(c))
    return None if h.producer is None else ctx.copy_at(h.producer)
