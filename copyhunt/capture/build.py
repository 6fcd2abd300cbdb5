"""Turn the dispatch capture's raw tuples into ``copyhunt.records`` objects (once, after the hunt)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from copyhunt.records import Access, CopyRecord, Frame, OpRecord, StorageInfo

Attribute = Callable[[Sequence[Frame]], "tuple[Frame | None, tuple[Frame, ...]]"]


@dataclass
class CaptureResult:
    """Records built from one capture."""

    copies: list[CopyRecord]
    ops: list[OpRecord]
    storages: list[StorageInfo]
    notes: list[str]


def line_of(code: Any, where: int) -> int:
    """Source line of a raw frame position: a line number (>= 0) or ``-1 - bytecode offset``."""
    if where >= 0:
        return where
    offset = -1 - where
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line if line is not None else code.co_firstlineno
    return code.co_firstlineno


def default_attribute(rule: Any, depth: int) -> Attribute:
    """(site, short stack) by ``rule`` alone: the first frame of the wanted rank, else the first candidate."""

    def attribute(stack: Sequence[Frame]) -> tuple[Frame | None, tuple[Frame, ...]]:
        fallback = None
        for i, fr in enumerate(stack):
            r = rule.rank(fr.file)
            if r >= rule.wanted:
                return fr, tuple(stack[i : i + depth])
            if r and fallback is None:
                fallback = i
        if fallback is None:
            return None, tuple(stack[:depth])
        return stack[fallback], tuple(stack[fallback : fallback + depth])

    return attribute


def build_records(
    *,
    ops: Sequence[tuple[Any, ...]],
    copies: Sequence[tuple[Any, ...]],
    sites: Sequence[tuple[Any, int]],
    stacks: Sequence[tuple[tuple[Any, int], ...]],
    devices: Mapping[int, str],
    nbytes: Mapping[int, int],
    alive: Mapping[int, bool],
    attribute: Attribute,
    notes: list[str],
    relocate: Callable[[Frame], Frame] | None = None,
) -> CaptureResult:
    """Records from raw tuples (layouts: see DispatchCapture._record and _record_copy).

    ``relocate`` rewrites each distinct frame once, after attribution chose the sites on the real
    paths (``copyhunt.attribution.frame_relocator``: paths relative to the project root).
    """
    frames: dict[tuple[int, int], Frame] = {}

    def frame_of(raw: tuple[Any, int]) -> Frame:
        code, where = raw
        key = (id(code), where)
        fr = frames.get(key)
        if fr is None:
            fr = frames[key] = Frame(code.co_filename, line_of(code, where), code.co_name)
        return fr

    site_frames = [frame_of(s) for s in sites]
    attributed = [attribute(tuple(frame_of(r) for r in st)) for st in stacks]
    if relocate is not None:
        site_frames = [relocate(f) for f in site_frames]
        attributed = [(None if s is None else relocate(s), tuple(relocate(f) for f in st)) for s, st in attributed]

    copy_records: list[CopyRecord] = []
    for c in sorted(copies, key=lambda c: c[0]):
        (seq, op, kind, nb, noop, src_dev, dst_dev, shape, dtype, src_dtype, src_contig, dst_contig,
         stack_i, module, region, tid, in_graph, src_sid, dst_sid, src_sids, exact, layouts) = c  # fmt: skip
        site, stack = attributed[stack_i]
        copy_records.append(
            CopyRecord(
                seq=seq,
                op=op,
                kind=kind,
                bytes=nb,
                noop=noop,
                src_device=src_dev,
                dst_device=dst_dev,
                shape=shape,
                dtype=dtype,
                site=site,
                module=module,
                region=region,
                captured_in_graph=in_graph,
                src_dtype=src_dtype,
                src_contiguous=src_contig,
                dst_contiguous=dst_contig,
                stack=stack,
                thread=tid,
                src_storage=src_sid,
                dst_storage=dst_sid,
                src_storages=src_sids if len(src_sids) > 1 else (),
                src_dtypes=tuple(d for d, _ in layouts) if layouts is not None else (),
                src_contiguity=tuple(c for _, c in layouts) if layouts is not None else (),
                bytes_exact=exact,
            )
        )

    accesses: dict[tuple[int, int, int, bool], Access] = {}

    def acc(raw: tuple[int, int, int, bool]) -> Access:
        a = accesses.get(raw)
        if a is None:
            a = accesses[raw] = Access(*raw)
        return a

    op_records: list[OpRecord] = []
    for o in sorted(ops, key=lambda o: o[0]):
        seq, op, reads, writes, allocs, frees, site_i, module, region, tid, is_copy, in_graph = o
        op_records.append(
            OpRecord(
                seq=seq,
                op=op,
                reads=tuple(acc(a) for a in reads),
                writes=tuple(acc(a) for a in writes),
                allocs=allocs,
                frees=frees,
                site=None if site_i is None else site_frames[site_i],
                module=module,
                region=region,
                thread=tid,
                is_copy=is_copy,
                captured_in_graph=in_graph,
            )
        )
    storages = [
        StorageInfo(id=i, device=devices[i], nbytes=nbytes[i], alive_at_end=bool(alive.get(i, False)))
        for i in sorted(devices)
    ]
    return CaptureResult(copy_records, op_records, storages, notes)
