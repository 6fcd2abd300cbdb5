"""The dispatch-level capture: a private TorchDispatchMode that records every op and every copy.

Per op it keeps only cheap raw facts (storage ids, byte ranges, a code object and line, the region and
module paths, the thread); records and symbolised stacks are built once, in :meth:`DispatchCapture.build`.
It never keeps a tensor: storages are known by id and weak reference only.

Sequence numbers and the device bridge: every op the mode dispatches takes the next sequence number,
except profiler bookkeeping (``profiler::`` ops, e.g. ``copyhunt.region``'s own ``record_function``) and
composite ops (the mode runs their C++ kernel with itself on, so the ops that kernel calls are
numbered instead). When ``op_range`` is given, as ``copyhunt.hunt(device_trace=True)`` does while its
device capture runs, EVERY numbered op runs inside ``op_range(seq, op)``, the ``copyhunt#<seq>``
profiler range the device join reads (``capture/device.py``): copies and all other ops alike, and in
copies-only hunts (``record_ops=False``) too, where the other ops get a number and a range but no record.

Threads: the mode stack is per thread, so a hunt installs the mode in threads STARTED while it runs
(``threading.setprofile``). Threads already running when the hunt starts are not traced. A thread that
outlives the hunt keeps a pass-through mode until it ends.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from _thread import get_ident
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from copyhunt.capture.copy_ops import COPY_OPS
from copyhunt.capture.op_roles import Plan, make_plan
from copyhunt.capture.raw import CaptureResult
from copyhunt.capture.recording import Recorder, copy_kind  # noqa: F401 - copy_kind re-exported
from copyhunt.errors import CopyhuntError
from copyhunt.records import Frame


class HuntActiveError(CopyhuntError):
    """A hunt was started while another one is running (hunts do not nest)."""


_compile_hook: "Callable[[], None] | None" = None


def set_compile_hook(hook: "Callable[[], None] | None") -> None:
    """Call ``hook`` whenever Dynamo asks the mode about compiling (``capture/compiled/hooks.py`` installs its hooks)."""
    global _compile_hook
    _compile_hook = hook


class _Marker:
    """A plan-table value for ops that are not recorded themselves."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_DECLINED = _Marker("declined")  # the compiled dispatch path's "the Python path takes this op"
_SKIP = _Marker("skip")  # profiler bookkeeping (copyhunt.region's own record_function): not a data op
_COMPOSITE = _Marker("composite")  # runs its C++ CompositeImplicitAutograd kernel: record the ops it calls

_CIA = torch._C.DispatchKey.CompositeImplicitAutograd
#: Backend keys: a composite op with its own kernel for one of these runs that kernel, not the composite.
_BACKEND_KEYS = ("CPU", "CUDA", "HIP", "XPU", "MPS", "Meta", "PrivateUse1")


def classify(func: Any) -> Any:
    """_SKIP, _COMPOSITE, or None (an op recorded by its own plan); computed once per op overload."""
    if getattr(func, "namespace", None) == "profiler":
        return _SKIP
    name = func.name()
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    if has(name, "CompositeImplicitAutograd") and not any(has(name, k) for k in _BACKEND_KEYS):
        return _COMPOSITE
    return None


#: Dynamo's frame hook switch (C). Inside a mode's ``__torch_dispatch__`` the hook must be off, or a
#: torch.compile'd caller would make Dynamo compile the mode's own Python. Torch wraps every mode's
#: ``__torch_dispatch__`` in ``torch._disable_dynamo`` for that: two Python frames and a few Python
#: calls per op (about 15% of a bare mode's cost on torch 2.13, benchmarks/overhead.py). Our mode does the same switch
#: itself (what that wrapper does for its ``callback=None`` in every stance: hook off, then the prior
#: hook back), where this torch offers both the switch and the per-class opt-out.
_set_eval_frame: Callable[[Any], Any] = getattr(
    getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None), "set_eval_frame", None
) or (lambda callback: None)
_OWN_DYNAMO_SWITCH = hasattr(getattr(torch._C, "_dynamo", None), "eval_frame") and hasattr(
    TorchDispatchMode, "_should_skip_dynamo"
)


class _Mode(TorchDispatchMode):
    """The per-thread dispatch mode: hands every op to its capture (pass-through once it stopped)."""

    def __init__(self, cap: "DispatchCapture") -> None:
        super().__init__()
        self.cap: DispatchCapture | None = cap
        # The compiled common path (native_recorder.cpp ``dispatch``) and its state, when available.
        self.fast: Callable[..., Any] | None = cap.native_dispatch
        self.fast_state: Any = cap.recorder.native_state

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False where this mode switches Dynamo's frame hook off itself (``_OWN_DYNAMO_SWITCH``)."""
        return not _OWN_DYNAMO_SWITCH

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        """True: torch.compile'd code stays compiled under the hunt (``capture/compiled`` records it).

        Dynamo asks this before it compiles a frame: the moment to install the compile-time hooks.
        """
        hook = _compile_hook
        if hook is not None:
            hook()
        return True

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        fast = self.fast
        if fast is not None:
            # An op with a plan, outside a device capture: the whole path below in one C call. It
            # declines (doing nothing) what it does not take: a new op, a composite, bookkeeping.
            out = fast(self.fast_state, func, args, kwargs)
            if out is not _DECLINED:
                return out
        prior = _set_eval_frame(None)  # Dynamo's frame hook off (see _OWN_DYNAMO_SWITCH)
        try:
            if kwargs is None:
                kwargs = {}
            cap = self.cap
            if cap is None:
                return func(*args, **kwargs)
            plan = cap._plans.get(func)
            if type(plan) is not Plan:
                if plan is None:
                    plan = cap._plans[func] = classify(func) or make_plan(func, COPY_OPS.get(func))
                if plan is _COMPOSITE:
                    # Composite ops reach the mode undecomposed under inference_mode and on inference
                    # tensors (no Autograd key decomposed them). Run the same C++ composite kernel the
                    # untraced program runs, with the mode back on so it sees the ops that kernel calls.
                    # Never func.decompose(): that prefers torch's Python decompositions, which differ
                    # (eval dropout would clone instead of returning its input, changing results).
                    with self:
                        return func._op_dk(_CIA, *args, **kwargs)
                if plan is _SKIP:
                    return func(*args, **kwargs)
            seq = next(cap._seq)
            if cap.op_range is None:
                out = func(*args, **kwargs)
            else:
                # Every op, not only copies: the device join needs the op that launched a device copy
                # made inside C++ (``.item()``, a copy kernel inside another aten op).
                with cap.op_range(seq, plan.name):
                    out = func(*args, **kwargs)
            if plan.copy_fn is None and not cap.record_ops:
                return out  # copies-only hunt: other ops just take a sequence number
            try:
                # The compiled recorder takes the op unless it declines it (a tensor it does not handle):
                # then the Python recorder does. Same rows either way (capture/native_recorder.py).
                state = cap.recorder.native_state
                if state is None or not cap.recorder.native_module.record(state, seq, plan, args, kwargs, out):
                    cap.record(seq, plan, args, kwargs, out, sys._getframe(1))
            except Exception as exc:  # noqa: BLE001 - our bookkeeping must never break the traced program
                cap.recorder.internal_error(func, exc)
            return out
        finally:
            _set_eval_frame(prior)


class _EagerMode(_Mode):
    """The mode of a ``compiled="eager"`` hunt: Dynamo skips compiled frames, so they run op by op."""

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        """False: torch.compile falls back to eager execution while this mode is active."""
        return False


def _lift_cpu_only(on: bool | None) -> bool | None:
    """Set torch's ``only_lift_cpu_tensors`` flag (process-wide); return the previous value.

    ``torch.tensor(data, device="cuda")`` (also ``as_tensor`` and ``new_tensor`` of Python data) builds
    a CPU tensor and moves it to the device with every dispatch mode off, so its host-to-device copy
    would reach no mode and have no Python line. With the flag (FakeTensorMode sets it too) torch
    makes the same CPU tensor, lifts it, and only then calls ``.to(device)`` with modes on: the same
    single host-to-device copy, now seen as ``_to_copy`` at the caller's line. CPU tensors: unchanged.
    """
    get = getattr(torch._C, "_only_lift_cpu_tensors", None)
    if get is None or on is None:
        return None  # an older torch without the flag: such copies stay device-only records
    prev = bool(get())
    torch._C._set_only_lift_cpu_tensors(on)
    return prev


_active_lock = threading.Lock()
_active: "DispatchCapture | None" = None


class DispatchCapture:
    """Records every op (storage accesses) and every copy (full facts) seen by the dispatcher.

    The capture's lifecycle (installing its mode in this thread and in threads started later, one hunt
    at a time) and op numbering; what each op records is its :class:`Recorder`'s job (``recorder``).

    ``rule`` ranks frames for the sites (``rank(filename) -> 0|1|2`` and ``wanted``, see
    ``copyhunt.attribution.SiteRule``); ``op_range(seq, op)``, when given, wraps the execution of every
    numbered op, copy or not (the ``copyhunt#<seq>`` range a device capture joins on; see the module
    docstring). ``record_ops=False`` records copy ops only (no OpRecord for other ops: cheaper, but the
    verdict analysis then has nothing to use). ``eager_compiled=True`` makes torch.compile'd code run op
    by op under the mode (the old behaviour). ``max_ops``: keep only the newest N op rows (ring mode).
    The compiled recorder takes the ops it handles when it can be built (``COPYHUNT_NATIVE=0``: never);
    both recorders give the same rows.
    """

    def __init__(
        self,
        *,
        rule: Any = None,
        stack_depth: int = 8,
        track_modules: bool = True,
        op_range: Callable[[int, str], ContextManager[Any]] | None = None,
        record_ops: bool = True,
        eager_compiled: bool = False,
        max_ops: int | None = None,
    ) -> None:
        self.recorder = Recorder(rule=rule, stack_depth=stack_depth, track_modules=track_modules, record_ops=record_ops)
        if max_ops is not None:
            self.recorder.log.keep_newest_ops(max_ops)
        self.record = self.recorder.record  # the hot path, bound once
        # The compiled common path of the mode (set at start when the compiled recorder is available).
        self.native_dispatch: Callable[..., Any] | None = None
        self.record_ops = record_ops
        self.op_range = op_range
        self._mode_cls: type[_Mode] = _EagerMode if eager_compiled else _Mode
        self.active = False
        self._seq = itertools.count()
        self._plans: dict[Any, Any] = {}
        self._modes: list[_Mode] = []
        self._main_mode: _Mode | None = None
        self._prev_thread_hook: Any = None
        self._start_thread = 0
        self._prev_lift: bool | None = None
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
        self.recorder.cuda = torch.cuda.is_available()
        rec = self.recorder
        rec.start_native()
        if rec.native_state is not None and self.op_range is None:
            hook = _set_eval_frame if _OWN_DYNAMO_SWITCH else None
            rec.native_module.attach_dispatch(
                rec.native_state, self._plans, Plan, self._seq, self.record_ops, _DECLINED, hook,
                self.record, rec.internal_error,
            )  # fmt: skip
            self.native_dispatch = rec.native_module.dispatch
        self.active = True
        modules = self.recorder.modules
        if modules is not None:
            modules.install()
        self._prev_thread_hook = getattr(threading, "_profile_hook", None)
        threading.setprofile(self._thread_hook)
        self._main_mode = self._mode_cls(self)
        self._modes.append(self._main_mode)
        self._start_thread = get_ident()
        self._prev_lift = _lift_cpu_only(True)
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
            _lift_cpu_only(self._prev_lift)
            threading.setprofile(self._prev_thread_hook)
            if self.recorder.modules is not None:
                self.recorder.modules.uninstall()
            for m in self._modes:
                m.cap = None  # threads still running keep a pass-through mode
                m.fast = None
            self._modes = []
            self._drop_native()
            self.recorder.close()
            with _active_lock:
                _active = None

    def forget(self) -> None:
        """Stop recording without touching the mode stack (a forked child set aside the parent's
        hunt, started in another thread): every mode passes ops through, a new hunt may start."""
        global _active
        self.active = False
        for m in self._modes:
            m.cap = None
            m.fast = None
        self._drop_native()
        _lift_cpu_only(self._prev_lift)
        threading.setprofile(self._prev_thread_hook)
        if self.recorder.modules is not None:
            self.recorder.modules.uninstall()
        with _active_lock:
            _active = None

    def _drop_native(self) -> None:
        self.native_dispatch = None
        self.recorder.stop_native()

    def _thread_hook(self, frame: Any, event: str, arg: Any) -> None:
        # First Python event of a thread started during the hunt: give it its own mode, then get
        # out of the way (a profile hook left on would slow every call in that thread).
        sys.setprofile(self._prev_thread_hook)
        if self.active:
            self.recorder.table.threaded = True
            mode = self._mode_cls(self)
            self._modes.append(mode)
            mode.__enter__()

    # --- building records ----------------------------------------------------------------

    def build(
        self,
        attribute: Callable[[Sequence[Frame]], tuple[Frame | None, tuple[Frame, ...]]] | None = None,
        relocate: Callable[[Frame], Frame] | None = None,
    ) -> CaptureResult:
        """Turn the raw rows into records; ``attribute`` maps a raw stack to (site, short stack)."""
        return self.recorder.read(attribute, relocate)
