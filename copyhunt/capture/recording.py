"""The recording half of the dispatch capture: what runs for every op (storage accesses, sites, copies).

Written for speed, since it runs once per aten op of the traced program: raw facts go into flat tuples
of ints and strings (code objects interned), storages are known by id and raw weak reference only,
and the records themselves are built after the hunt (``capture/build.py``).
"""

from __future__ import annotations

import sys
import threading
from _thread import get_ident
from typing import Any

import torch

from copyhunt.capture.copy_ops import CopyFacts
from copyhunt.capture.modules import ModuleTracker
from copyhunt.capture.op_roles import READ, RW, WRITE, Plan
from copyhunt.capture.regions import _state as _region_state
from copyhunt.capture.storages import StorageTable, access

_PKG_DIR = __file__.rsplit("/", 2)[0] + "/"  # .../copyhunt/

_expired = torch.UntypedStorage._expired  # type: ignore[attr-defined]


if sys.version_info >= (3, 11):

    def _where(f: Any) -> int:
        # The bytecode offset: f_lineno costs ~1 us on 3.11 (it decodes the line table);
        # build turns offsets into lines once per distinct site.
        return -1 - f.f_lasti

else:  # pragma: no cover - 3.10

    def _where(f: Any) -> int:
        return f.f_lineno


_LASTI = sys.version_info >= (3, 11)


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


class SiteRanker:
    """Default frame ranking when no attribution rule is injected: any frame outside copyhunt."""

    wanted = 1

    def rank(self, filename: str) -> int:
        """1 for a possible site, 0 for copyhunt's own frames."""
        return 0 if filename.startswith(_PKG_DIR) else 1


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
    """Per-op recording state and the hot path; :class:`DispatchCapture` adds the lifecycle."""

    def __init__(self, *, rule: Any, stack_depth: int, track_modules: bool, record_ops: bool) -> None:
        self.rule = rule if rule is not None else SiteRanker()
        self.record_ops = record_ops
        self.stack_depth = stack_depth
        self.table = StorageTable()
        # Raw records are flat tuples of ints / strs (code objects interned into _sites / _stacks):
        # they add nothing for the cyclic GC to traverse.
        self._ops: list[tuple[Any, ...]] = []
        self._copies: list[tuple[Any, ...]] = []
        self._site_ids: dict[tuple[int, int], int] = {}
        self._sites: list[tuple[Any, int]] = []
        self._stack_ids: dict[tuple[int, ...], int] = {}
        self._stacks: list[tuple[tuple[Any, int], ...]] = []
        self._codes: dict[int, tuple[Any, int]] = {}  # id(code) -> (code, rank)
        self._watch: list[int] = []
        self._watch_pos = 0
        self._watched: set[int] = set()
        self._freed: set[int] = set()
        self._watch_lock = threading.Lock()
        self._modules = ModuleTracker() if track_modules else None
        self._mod_state = self._modules._state if self._modules is not None else None
        self._cuda = False
        self._errors: list[str] = []
        self._names: dict[Any, str] = {}

    def _internal_error(self, func: Any, exc: Exception) -> None:
        if len(self._errors) < 5:
            self._errors.append(f"copyhunt could not record {func}: {type(exc).__name__}: {exc}")

    def _rank(self, code: Any) -> int:
        # Keyed by id(code): hashing a code object is slow (it hashes its bytecode every time).
        # The entry keeps the code object alive, so its id cannot be reused meanwhile.
        e = self._codes.get(id(code))
        if e is None or e[0] is not code:
            e = self._codes[id(code)] = (code, self.rule.rank(code.co_filename))
        return e[1]

    def _site(self, frame: Any) -> Any:
        """The op's site frame: the first frame of the wanted rank (else the first candidate)."""
        codes = self._codes
        wanted = self.rule.wanted
        fallback = None
        f = frame
        n = 0
        while f is not None and n < 64:
            code = f.f_code
            e = codes.get(id(code))
            r = e[1] if e is not None and e[0] is code else self._rank(code)
            if r >= wanted:
                return f
            if r and fallback is None:
                fallback = f
            f = f.f_back
            n += 1
        return fallback

    def _intern_site(self, f: Any) -> int:
        key = (id(f.f_code), _where(f))
        i = self._site_ids.get(key)
        if i is None:
            i = self._site_ids[key] = len(self._sites)
            self._sites.append((f.f_code, key[1]))
        return i

    def _record(
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
        Tensor = torch.Tensor
        reads: list[tuple[int, int, int, bool]] = []
        writes: list[tuple[int, int, int, bool]] = []
        allocs: tuple[int, ...] = ()
        frees: list[int] = []
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
                    if sid is not None:
                        self._note_free(sid, frees)  # a dead storage's address, reused
                    if not table.threaded and o.is_cpu:
                        # StorageTable.new inlined for the common case (one thread, CPU): per op.
                        sid = next(table.ids)
                        weak[sid] = st._weak_ref()
                        table.device[sid] = "cpu"
                        table.nbytes[sid] = st.nbytes()
                        by_cdata[cd] = sid
                        new = True
                    else:
                        sid, new, _ = table.new(st, cd, o, sid)
                    out_sids += (sid,)
                    if new:
                        allocs += (sid,)
                        if o.is_contiguous():
                            off = o.storage_offset()
                            writes.append((sid, off * o.element_size() if off else 0, o.nbytes, True))
                        else:
                            writes.append(access(o, sid))

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
                    if replaced is not None:
                        self._note_free(replaced, frees)
                if role == READ:
                    if sid in out_sids:
                        continue  # returned as (a view of) the output: an alias, not a read
                    if t.is_contiguous():
                        off = t.storage_offset()
                        reads.append((sid, off * t.element_size() if off else 0, t.nbytes, True))
                    else:
                        reads.append(access(t, sid))
                elif role == WRITE:
                    writes.append(access(t, sid, not plan.partial))
                else:
                    acc = access(t, sid, not plan.partial)
                    reads.append(acc)
                    writes.append(acc)

        if not seq & 7 and self._watch:
            self._check_watch(frees)

        site_frame = self._site(frame)
        site = None if site_frame is None else self._intern_site(site_frame)
        tid = get_ident()
        module = self._mod_state.path if self._mod_state is not None else None
        region = _region_state.path
        in_graph = self._cuda and torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()

        is_copy = False
        if plan.copy_fn is not None:
            facts = plan.copy_fn(args, kwargs, out)
            if facts is not None:
                is_copy = True
                self._record_copy(seq, plan.name, facts, site_frame or frame, module, region, tid, in_graph)
        self._ops.append(
            (
                seq,
                plan.name,
                tuple(reads),
                tuple(writes),
                allocs,
                tuple(frees) if frees else (),
                site,
                module,
                region,
                tid,
                is_copy,
                bool(in_graph),
            )
        )

    def _note_free(self, sid: int, frees: list[int]) -> None:
        if sid not in self._freed:
            self._freed.add(sid)
            frees.append(sid)

    def _check_watch(self, frees: list[int]) -> None:
        # Only storages that took part in a copy are watched, checked every 8th op, 16 at a time: a
        # free is seen some ops late at worst, never before the storage's last access, so the order
        # of accesses and frees stays right (and stop() takes a final sweep).
        if not self._watch_lock.acquire(blocking=False):
            return
        try:
            w = self._watch
            weak = self.table.weak
            for _ in range(min(16, len(w))):
                i = self._watch_pos % len(w)
                sid = w[i]
                if _expired(weak[sid]):
                    w[i] = w[-1]
                    w.pop()
                    self._note_free(sid, frees)
                    if not w:
                        break
                else:
                    self._watch_pos = i + 1
        finally:
            self._watch_lock.release()

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

    def _raw_stack(self, site: Any) -> int:
        """Interned raw stack: the site frame and up to stack_depth - 1 callers.

        Frames inside the site (torch, copyhunt) are left out: the same rule chose the site, so
        attribution at build time can only pick it again.
        """
        depth = self.stack_depth
        key: list[int] = []
        f = site
        lasti = _LASTI
        while f is not None and len(key) < 2 * depth:
            key.append(id(f.f_code))
            key.append(-1 - f.f_lasti if lasti else f.f_lineno)  # _where(f), inlined
            f = f.f_back
        k = tuple(key)
        i = self._stack_ids.get(k)
        if i is None:
            # New stack: keep its code objects (they keep the ids in ``k`` unique meanwhile).
            out: list[tuple[Any, int]] = []
            f = site
            while f is not None and len(out) < depth:
                out.append((f.f_code, _where(f)))
                f = f.f_back
            i = self._stack_ids[k] = len(self._stacks)
            self._stacks.append(tuple(out))
        return i

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
        self._copies.append(
            (
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
                self._raw_stack(frame),
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
        )

