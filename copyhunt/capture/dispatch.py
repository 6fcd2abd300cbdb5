"""The dispatch-level capture: a private TorchDispatchMode that records every op and every copy.

Per op it keeps only cheap raw facts (storage ids, byte ranges, a code object and line, the region and
module paths, the thread); records and symbolised stacks are built once, in :meth:`DispatchCapture.build`.
It never keeps a tensor: storages are known by id and weak reference only.

Threads: the mode stack is per thread, so a hunt installs the mode in threads STARTED while it runs
(``threading.setprofile``). Threads already running when the hunt starts are not traced. A thread that
outlives the hunt keeps a pass-through mode until it ends.
"""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import time
from _thread import get_ident
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from copyhunt.capture.build import CaptureResult, build_records, default_attribute
from copyhunt.capture.copy_ops import COPY_OPS, CopyFacts
from copyhunt.capture.modules import ModuleTracker
from copyhunt.capture.op_roles import READ, RW, WRITE, Plan, make_plan
from copyhunt.capture.regions import _state as _region_state
from copyhunt.capture.storages import StorageTable, access
from copyhunt.errors import CopyhuntError
from copyhunt.records import Frame

_THIS_DIR = __file__.rsplit("/", 1)[0]

_expired = torch.UntypedStorage._expired  # type: ignore[attr-defined]


class HuntActiveError(CopyhuntError):
    """A hunt was started while another one is running (hunts do not nest)."""


if sys.version_info >= (3, 11):

    def _where(f: Any) -> int:
        # The bytecode offset: f_lineno costs ~1 us on 3.11 (it decodes the line table);
        # build turns offsets into lines once per distinct site.
        return -1 - f.f_lasti

else:  # pragma: no cover - 3.10

    def _where(f: Any) -> int:
        return f.f_lineno


_LASTI = sys.version_info >= (3, 11)


class _Marker:
    """A plan-table value for ops that are not recorded themselves."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_SKIP = _Marker("skip")  # profiler bookkeeping (copyhunt.region's own record_function): not a data op
_DECOMPOSE = _Marker("decompose")  # a composite op: record the ops it decomposes into instead


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
        return 0 if filename.startswith(_THIS_DIR.rsplit("/", 1)[0]) else 1


class _Mode(TorchDispatchMode):
    """The per-thread dispatch mode: hands every op to its capture (pass-through once it stopped)."""

    def __init__(self, cap: "DispatchCapture") -> None:
        super().__init__()
        self.cap: DispatchCapture | None = cap

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        if kwargs is None:
            kwargs = {}
        cap = self.cap
        if cap is None:
            return func(*args, **kwargs)
        plan = cap._plans.get(func)
        if type(plan) is not Plan:
            if plan is _SKIP:
                return func(*args, **kwargs)
            if plan is None and getattr(func, "namespace", None) == "profiler":
                cap._plans[func] = _SKIP
                return func(*args, **kwargs)
            # First sight, or a known composite op. Under inference_mode composite ops arrive
            # undecomposed (contiguous, to, reshape...); decomposing them here makes the recorded
            # ops the same as in normal mode (the pattern of torch's FlopCounterMode).
            with self:
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                cap._plans[func] = _DECOMPOSE
                return r
            plan = cap._plans[func] = make_plan(func, COPY_OPS.get(func))
        seq = next(cap._seq)
        if plan.copy_fn is None:
            out = func(*args, **kwargs)
            if not cap.record_ops:
                return out  # copies-only hunt: other ops just take a sequence number
        elif cap.copy_range is not None:
            with cap.copy_range(seq, plan.name):
                out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        try:
            cap._record(seq, plan, args, kwargs, out, sys._getframe(1))
        except Exception as exc:  # noqa: BLE001 - our bookkeeping must never break the traced program
            cap._internal_error(func, exc)
        return out


_active_lock = threading.Lock()
_active: "DispatchCapture | None" = None


class DispatchCapture:
    """Records every op (storage accesses) and every copy (full facts) seen by the dispatcher.

    ``rule`` ranks frames for the sites (``rank(filename) -> 0|1|2`` and ``wanted``, see
    ``copyhunt.attribution.SiteRule``); ``copy_range(seq, op)``, when given, wraps each copy op's
    execution (e.g. a profiler range a device capture joins on). ``record_ops=False`` records copy
    ops only (no OpRecord for other ops: cheaper, but the verdict analysis then has nothing to use).
    """

    def __init__(
        self,
        *,
        rule: Any = None,
        stack_depth: int = 8,
        track_modules: bool = True,
        copy_range: Callable[[int, str], ContextManager[Any]] | None = None,
        record_ops: bool = True,
    ) -> None:
        self.rule = rule if rule is not None else SiteRanker()
        self.record_ops = record_ops
        self.stack_depth = stack_depth
        self.copy_range = copy_range
        self.active = False
        self.table = StorageTable()
        self._seq = itertools.count()
        # Raw records are flat tuples of ints / strs (code objects interned into _sites / _stacks):
        # they add nothing for the cyclic GC to traverse.
        self._ops: list[tuple[Any, ...]] = []
        self._copies: list[tuple[Any, ...]] = []
        self._site_ids: dict[tuple[int, int], int] = {}
        self._sites: list[tuple[Any, int]] = []
        self._stack_ids: dict[tuple[int, ...], int] = {}
        self._stacks: list[tuple[tuple[Any, int], ...]] = []
        self._plans: dict[Any, Any] = {}
        self._codes: dict[int, tuple[Any, int]] = {}  # id(code) -> (code, rank)
        self._watch: list[int] = []
        self._watch_pos = 0
        self._watched: set[int] = set()
        self._freed: set[int] = set()
        self._watch_lock = threading.Lock()
        self._modules = ModuleTracker() if track_modules else None
        self._mod_state = self._modules._state if self._modules is not None else None
        self._modes: list[_Mode] = []
        self._main_mode: _Mode | None = None
        self._prev_thread_hook: Any = None
        self._cuda = False
        self._start_thread = 0
        self._errors: list[str] = []
        self._names: dict[Any, str] = {}
        self._alive: dict[int, bool] = {}
        self.started_at = 0.0
        self.duration_s = 0.0

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Install the mode in this thread (and in threads started from now on)."""
        global _active
        with _active_lock:
            if _active is not None:
                raise HuntActiveError(
                    "a copyhunt hunt is already running; hunts do not nest (stop the first one before starting another)"
                )
            _active = self
        self._cuda = torch.cuda.is_available()
        self.active = True
        if self._modules is not None:
            self._modules.install()
        self._prev_thread_hook = getattr(threading, "_profile_hook", None)
        threading.setprofile(self._thread_hook)
        self._main_mode = _Mode(self)
        self._modes.append(self._main_mode)
        self._start_thread = get_ident()
        self.started_at = time.perf_counter()
        self._main_mode.__enter__()

    def stop(self) -> None:
        """Remove the mode (call from the thread that started it); take the final liveness sweep."""
        global _active
        if not self.active:
            return
        if get_ident() != self._start_thread:
            # The mode sits on the starting thread's dispatch stack; popping here would pop another.
            raise HuntActiveError("a hunt must be stopped from the thread that started it")
        self.duration_s = time.perf_counter() - self.started_at
        self.active = False
        try:
            if self._main_mode is not None:
                self._main_mode.__exit__(None, None, None)
        finally:
            threading.setprofile(self._prev_thread_hook)
            if self._modules is not None:
                self._modules.uninstall()
            for m in self._modes:
                m.cap = None  # threads still running keep a pass-through mode
            self._modes = []
            self._alive = self.table.close()
            with _active_lock:
                _active = None

    def _thread_hook(self, frame: Any, event: str, arg: Any) -> None:
        # First Python event of a thread started during the hunt: give it its own mode, then get
        # out of the way (a profile hook left on would slow every call in that thread).
        sys.setprofile(self._prev_thread_hook)
        if self.active:
            self.table.threaded = True
            mode = _Mode(self)
            self._modes.append(mode)
            mode.__enter__()

    def _internal_error(self, func: Any, exc: Exception) -> None:
        if len(self._errors) < 5:
            self._errors.append(f"copyhunt could not record {func}: {type(exc).__name__}: {exc}")

    # --- the hot path: every op of the traced program goes through here --------------------

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
                    st = o.untyped_storage()
                    cd = st._cdata
                    sid = by_cdata.get(cd)
                    if sid is not None and not _expired(weak[sid]):
                        out_sids += (sid,)
                        continue
                    sid, new, replaced = table.new(st, cd, o, sid)
                    if replaced is not None:
                        self._note_free(replaced, frees)
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
                st = t.untyped_storage()
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
        src = srcs[0] if srcs else None
        table = self.table
        dst_sid = table.lookup(dst)[0]
        src_sids = tuple(table.lookup(s)[0] for s in srcs)
        for sid in (dst_sid, *src_sids):
            self._watch_storage(sid)
        names = self._names
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
                tuple(dst.shape),
                names.get(dst.dtype) or self._name(dst.dtype),
                (names.get(src.dtype) or self._name(src.dtype)) if src is not None else None,
                src.is_contiguous() if src is not None else None,
                dst.is_contiguous(),
                self._raw_stack(frame),
                module,
                region,
                tid,
                bool(in_graph),
                src_sids[0] if src_sids else None,
                dst_sid,
                src_sids,
                bool(facts.exact),
            )
        )

    # --- building records ----------------------------------------------------------------

    def build(
        self,
        attribute: Callable[[Sequence[Frame]], tuple[Frame | None, tuple[Frame, ...]]] | None = None,
    ) -> CaptureResult:
        """Turn the raw facts into records; ``attribute`` maps a raw stack to (site, short stack)."""
        if attribute is None:
            attribute = default_attribute(self.rule, self.stack_depth)
        # Building creates a few objects per op, all kept: the cyclic GC would rescan the growing
        # heap again and again for nothing (our records hold no cycles). Paused for this call only.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._build(attribute)
        finally:
            if was_enabled:
                gc.enable()

    def _build(self, attribute: Callable[[Sequence[Frame]], tuple[Frame | None, tuple[Frame, ...]]]) -> CaptureResult:
        return build_records(
            ops=self._ops,
            copies=self._copies,
            sites=self._sites,
            stacks=self._stacks,
            devices=self.table.device,
            nbytes=self.table.nbytes,
            alive=self._alive,
            attribute=attribute,
            notes=list(self._errors),
        )
