"""The per-op recorder of the dispatch capture: storage accesses, sites and copies, as raw rows.

It runs once per aten op of the traced program, so it is written for speed: raw facts go into the
flat rows of :class:`copyhunt.capture.raw.RawLog` (code objects interned), storages are known by id
and raw weak reference only (``capture/storages.py``), and the site is chosen by the one site chooser
(``capture/sites.py``). Records are built from the rows after the hunt (:meth:`Recorder.read`).
:class:`copyhunt.capture.dispatch.DispatchCapture` owns a Recorder and hands it every op.
"""

from __future__ import annotations

import threading
from _thread import get_ident
from typing import Any, Callable

import torch

from copyhunt.capture.copy_ops import CopyFacts
from copyhunt.capture.modules import ModuleTracker
from copyhunt.capture.op_roles import READ, RW, WRITE, Plan
from copyhunt.capture.regions import _state as _region_state
from copyhunt.capture.raw import Attribute, CaptureResult, RawLog, rank_attribute
from copyhunt.capture.sites import SiteChooser
from copyhunt.capture.storages import StorageTable, access
from copyhunt.records import Frame

_expired = torch.UntypedStorage._expired  # type: ignore[attr-defined]


def copy_kind(src: torch.device, dst: torch.device) -> str:
    """d2d (same device, the CPU included), h2d, d2h or p2p (two different devices)."""
    if src == dst:
        return "d2d"
    s_host, d_host = src.type == "cpu", dst.type == "cpu"
    if s_host and not d_host:
        return "h2d"
    if d_host and not s_host:
        return "d2h"
    return "p2p"


def _in_cuda_graph() -> bool:
    """Whether the current CUDA stream is capturing a graph (per op, only when CUDA is available)."""
    return bool(torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing())


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    try:
        return tuple(t.shape)
    except RuntimeError:
        return ()  # nested tensors have no single shape


def _contiguous(t: torch.Tensor) -> bool | None:
    try:
        return t.is_contiguous()
    except (RuntimeError, NotImplementedError):
        return None  # sparse layouts have no contiguity


class Recorder:
    """Per-op recording state and the hot path: every op's facts become one raw row."""

    def __init__(self, *, rule: Any, stack_depth: int, track_modules: bool, record_ops: bool) -> None:
        self.sites = SiteChooser(rule)
        self.rule = self.sites.rule
        self.record_ops = record_ops
        self.stack_depth = stack_depth
        self.table = StorageTable()
        self.log = RawLog()
        self._write_op = self.log.op
        self._write_site = self.log.site
        self._live_site = self.sites.live
        self._site_codes = self.sites._codes
        self._wanted = self.sites.wanted
        self._watch: list[int] = []
        self._watch_pos = 0
        self._watched: set[int] = set()
        self._freed: set[int] = set()
        self._watch_lock = threading.Lock()
        self.modules = ModuleTracker() if track_modules else None
        self._mod_state = self.modules._state if self.modules is not None else None
        self.cuda = False  # set by the capture when it starts: whether CUDA graph capture must be checked
        self.errors: list[str] = []
        self._names: dict[Any, str] = {}
        self._tids: dict[int, int] = {}
        self.alive: set[int] = set()  # ids of the storages still alive when the hunt ended
        # The compiled recorder (capture/native_recorder.py), set by :meth:`start_native`: its module
        # (kept after the hunt: it also builds the records, RawLog.read) and, while the hunt runs, its state.
        self.native_module: Any = None
        self.native_state: Any = None
        self.native_note: str | None = None

    def start_native(self) -> None:
        """Use the compiled recorder for the ops it handles, when it can be built (else say why once)."""
        from copyhunt.capture import native_recorder

        mod = native_recorder.load()
        if mod is None:
            if native_recorder.enabled_by_env():  # turned off by the user: nothing to say
                reason = native_recorder.unavailable_reason()
                self.native_note = f"the compiled recorder is not in use ({reason}); the Python recorder ran (slower)"
            return
        table, log, sites = self.table, self.log, self.sites
        in_graph = _in_cuda_graph if self.cuda else None
        self.native_module = mod
        self.native_state = mod.make_state(
            table.by_cdata, table.weak, table.device, table.nbytes, table, self._freed, self._watch, self,
            sites._codes, sites.wanted, sites.rank_code, log.sites, log._site_ids, log._append_op, self._tids,
            self._mod_state, _region_state, in_graph, torch.Tensor, (torch.Tensor, torch.nn.Parameter),
            self._watched, log.copies, log.stacks, log._stack_ids, self.stack_depth,
        )  # fmt: skip

    def stop_native(self) -> None:
        """Drop the compiled recorder's state (it holds references to the tables, not to tensors)."""
        self.native_state = None

    def internal_error(self, func: Any, exc: Exception) -> None:
        """Note a failure of our own bookkeeping (the traced program goes on; the first five are kept)."""
        if len(self.errors) < 5:
            self.errors.append(f"copyhunt could not record {func}: {type(exc).__name__}: {exc}")

    def module_path(self) -> str | None:
        """The module path now (``capture/modules.py``), or None without module tracking."""
        return self._mod_state.path if self._mod_state is not None else None

    def close(self) -> None:
        """The hunt ended: take the liveness of every storage and drop the weak references."""
        self.alive = {sid for sid, alive in self.table.close().items() if alive}

    def read(self, attribute: Attribute | None = None, relocate: Callable[[Frame], Frame] | None = None) -> CaptureResult:
        """Records from the raw rows; ``attribute`` maps a raw stack to (site, short stack), ``relocate``
        each distinct frame afterwards (``RawLog.read``)."""
        if attribute is None:
            attribute = rank_attribute(self.sites, self.stack_depth)
        return self.log.read(
            devices=self.table.device,
            nbytes=self.table.nbytes,
            alive=self.alive,
            attribute=attribute,
            notes=list(self.errors) + ([self.native_note] if self.native_note else []),
            relocate=relocate,
            native=self.native_module,
        )

    def record(
        self,
        seq: int,
        plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out: Any,
        frame: Any,
    ) -> None:
        # Written for speed (it runs for every op): locals instead of attributes, the contiguous
        # case inline, containers only when something goes in them.
        table = self.table
        by_cdata = table.by_cdata
        weak = table.weak
        lock = table.lock
        Tensor = torch.Tensor
        # Flat tuples: (storage, offset, nbytes, dense) after one another (one tuple per op, not one
        # per access); grown by concatenation, cheaper than a list and a tuple() for 1-3 accesses.
        reads: tuple[Any, ...] = ()
        writes: tuple[Any, ...] = ()
        allocs: tuple[int, ...] = ()
        frees: tuple[int, ...] = ()
        out_sids: tuple[int, ...] = ()

        if not plan.skip_outputs:
            for o in out if type(out) is tuple or type(out) is list else (out,):
                if isinstance(o, Tensor):
                    try:
                        st = o.untyped_storage()
                    except (RuntimeError, NotImplementedError):
                        continue  # no storage (sparse, nested...): nothing to account
                    cd = st._cdata
                    sid = by_cdata.get(cd)
                    if sid is not None and not _expired(weak[sid]):
                        out_sids += (sid,)
                        continue
                    if sid is not None and sid not in self._freed:
                        self._freed.add(sid)  # a dead storage's address, reused
                        frees += (sid,)
                    if o.is_cpu and not table.threaded:
                        # StorageTable.new inlined for the common case (one thread, CPU): per op. Were a
                        # thread to start right now, the worst case is one storage registered twice.
                        lock.acquire()
                        try:
                            sid = len(weak)
                            weak.append(st._weak_ref())
                            table.device.append("cpu")
                            table.nbytes.append(st.nbytes())
                            by_cdata[cd] = sid
                        finally:
                            lock.release()
                        new = True
                    else:
                        sid, new, _ = table.new(st, cd, o, sid)
                    out_sids += (sid,)
                    if new:
                        allocs += (sid,)
                        if o.is_contiguous():
                            off = o.storage_offset()
                            writes += (sid, off * o.element_size() if off else 0, o.nbytes, True)
                        else:
                            writes += access(o, sid)

        nargs = len(args)
        for pos, name, role in plan.args:
            a = args[pos] if pos < nargs else kwargs.get(name)
            if a is None:
                continue
            if role == WRITE and plan.accumulate_pos is not None:
                ap = plan.accumulate_pos
                if args[ap] if ap < nargs else kwargs.get("accumulate", False):
                    role = RW
            for t in (a,) if isinstance(a, Tensor) else a if type(a) is list or type(a) is tuple else ():
                if not isinstance(t, Tensor):
                    continue
                try:
                    st = t.untyped_storage()
                except (RuntimeError, NotImplementedError):
                    continue  # no storage (sparse, nested...): nothing to account
                cd = st._cdata
                sid = by_cdata.get(cd)
                if sid is None or _expired(weak[sid]):
                    sid, _, replaced = table.new(st, cd, t, sid)
                    if replaced is not None and replaced not in self._freed:
                        self._freed.add(replaced)
                        frees += (replaced,)
                if role == READ:
                    if sid in out_sids:
                        continue  # returned as (a view of) the output: an alias, not a read
                    if t.is_contiguous():
                        off = t.storage_offset()
                        reads += (sid, off * t.element_size() if off else 0, t.nbytes, True)
                    else:
                        reads += access(t, sid)
                elif role == WRITE:
                    writes += access(t, sid, not plan.partial)
                else:
                    acc = access(t, sid, not plan.partial)
                    reads += acc
                    writes += acc

        if not seq & 7 and self._watch:
            frees += self._check_watch()

        # The site: SiteChooser.live's first step spelled out (the op's own frame is the site for
        # most ops), the walk only when it is not.
        code = frame.f_code
        e = self._site_codes.get(id(code))
        site_frame = frame if e is not None and e[0] is code and e[1] >= self._wanted else self._live_site(frame)
        site = None if site_frame is None else self._write_site(site_frame)
        t = get_ident()
        tid = self._tids.get(t) or self._tids.setdefault(t, t)  # one int object per thread, not per row
        mod_state = self._mod_state
        module = mod_state.path if mod_state is not None else None
        region = _region_state.path
        in_graph = _in_cuda_graph() if self.cuda else False

        is_copy = False
        if plan.copy_fn is not None:
            facts = plan.copy_fn(args, kwargs, out)
            if facts is not None:
                is_copy = True
                self._record_copy(seq, plan.name, facts, site_frame or frame, module, region, tid, in_graph)
        self._write_op(
            seq,
            plan.name,
            reads,
            writes,
            allocs,
            frees,
            site,
            module,
            region,
            tid,
            is_copy,
            in_graph,
        )

    def _check_watch(self) -> tuple[int, ...]:
        """Watched storages found freed (each reported once)."""
        # Only storages that took part in a copy are watched, checked every 8th op, 16 at a time: a
        # free is seen some ops late at worst, never before the storage's last access, so the order
        # of accesses and frees stays right (and stop() takes a final sweep).
        frees: tuple[int, ...] = ()
        if not self._watch_lock.acquire(blocking=False):
            return frees
        try:
            w = self._watch
            expired = self.table.expired
            for _ in range(min(16, len(w))):
                i = self._watch_pos % len(w)
                sid = w[i]
                if expired(sid):
                    w[i] = w[-1]
                    w.pop()
                    if sid not in self._freed:
                        self._freed.add(sid)
                        frees += (sid,)
                    if not w:
                        break
                else:
                    self._watch_pos = i + 1
        finally:
            self._watch_lock.release()
        return frees

    def _sid_or_none(self, t: torch.Tensor) -> int | None:
        try:
            return self.table.lookup(t)[0]
        except (RuntimeError, NotImplementedError):
            return None  # a tensor without a storage (sparse, nested...)

    def _name(self, obj: Any) -> str:
        # str() of devices and dtypes, cached: they repeat on every copy.
        name = self._names[obj] = str(obj)
        return name

    def _watch_storage(self, sid: int) -> None:
        if sid not in self._watched:
            self._watched.add(sid)
            with self._watch_lock:
                self._watch.append(sid)

    def _record_copy(
        self,
        seq: int,
        name: str,
        facts: CopyFacts,
        frame: Any,
        module: str | None,
        region: str | None,
        tid: int,
        in_graph: Any,
    ) -> None:
        dst = facts.dst
        srcs = [s for s in facts.srcs if isinstance(s, torch.Tensor)]
        names = self._names
        src = srcs[0] if srcs else None
        dst_sid = None if facts.to_host_value else self._sid_or_none(dst)
        src_sids = tuple(sid for sid in map(self._sid_or_none, srcs) if sid is not None)
        # Several sources (cat): each one's dtype and layout too, aligned with src_sids (the
        # verdicts judge every source; the record's src_dtype / src_contiguous describe the first).
        layouts = None
        if len(src_sids) > 1:
            kept = [s for s in srcs if self._sid_or_none(s) is not None]
            layouts = tuple((names.get(s.dtype) or self._name(s.dtype), _contiguous(s)) for s in kept)
        for sid in (dst_sid, *src_sids):
            if sid is not None:
                self._watch_storage(sid)
        if dst.is_cpu and (src is None or src.is_cpu):
            kind, src_name, dst_name = "d2d", "cpu", "cpu"  # the common CPU case, no torch.device built
        else:
            dst_dev = dst.device
            src_dev = src.device if src is not None else dst_dev
            kind = copy_kind(src_dev, dst_dev)
            src_name = names.get(src_dev) or self._name(src_dev)
            dst_name = names.get(dst_dev) or self._name(dst_dev)
        self.log.copy(
            seq,
            name,
            kind,
            int(facts.nbytes),
            bool(facts.noop),
            src_name,
            dst_name,
            _shape(dst),
            names.get(dst.dtype) or self._name(dst.dtype),
            (names.get(src.dtype) or self._name(src.dtype)) if src is not None else None,
            _contiguous(src) if src is not None else None,
            bool(_contiguous(dst)),
            self.log.stack(frame, self.stack_depth),
            module,
            region,
            tid,
            bool(in_graph),
            src_sids[0] if src_sids else None,
            dst_sid,
            src_sids,
            bool(facts.exact),
            layouts,
        )
