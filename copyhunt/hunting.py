"""``copyhunt.hunt()``: the public facade that records every tensor copy a block of code makes.

    with copyhunt.hunt() as h:
        model(x)
    h.copies          # records.Copy per copy: attributed to the user's line, with its verdict
    h.trace           # records.Trace: every copy, every op's storage accesses, storages, meta

It wires the dispatch capture (``copyhunt.capture.dispatch``), attribution (``copyhunt.attribution``),
the torch.compile capture (``copyhunt.capture.compiled``: compiled code stays compiled and the copies
Inductor kept are recorded, or with ``compiled="eager"`` it runs op by op) and, when asked, the device
capture (``copyhunt.capture.device``, imported lazily).
Hunts do not nest: starting one while another runs raises ``HuntActiveError``.

The package root exports ``copyhunt.hunt`` lazily (torch loads on first use); this module is named
apart from the function so that importing it never shadows ``copyhunt.hunt``. Inside copyhunt the
spelling is ``from copyhunt.hunting import Hunt, hunt``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import torch

import copyhunt
from copyhunt.attribution import make_attributor
from copyhunt.capture.dispatch import DispatchCapture, HuntActiveError
from copyhunt.errors import CopyhuntError, NoDeviceError
from copyhunt.notes import close_notes, open_notes
from copyhunt.records import COMPILED_MODES, CompiledHunt, Copy, Trace, TraceMeta
from copyhunt.selection import Selection, SelectionError
from copyhunt.view import TraceView, view

__all__ = ["hunt", "Hunt", "HuntActiveError", "HuntOptionError", "describe_device", "describe_process", "running_hunt"]


class HuntOptionError(CopyhuntError):
    """A hunt option has a bad value (unknown copy kind, empty region, stack depth < 1, unknown compiled mode)."""


def describe_device() -> str:
    """The accelerator the traced code used ("cuda:0 NVIDIA H100 80GB HBM3"), else "cpu"."""
    # Only when CUDA is already initialised: initialising it just to describe it would be a side
    # effect, and a program that never touched the GPU ran its copies on the CPU.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        idx = torch.cuda.current_device()
        return f"cuda:{idx} {torch.cuda.get_device_name(idx)}"
    return "cpu"


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def describe_process() -> dict[str, Any]:
    """This process for ``TraceMeta``: pid, parent pid and, for a torch.distributed rank, its coordinates.

    The rank comes from ``torch.distributed`` when a process group is up, else from the ``RANK`` /
    ``WORLD_SIZE`` / ``LOCAL_RANK`` variables torchrun sets for every worker.
    """
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    dist = getattr(torch, "distributed", None)
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
    except Exception:  # noqa: BLE001 - a half torn-down group: the variables say the same
        pass
    return {"pid": os.getpid(), "parent_pid": os.getppid(), "rank": rank, "world_size": world,
            "local_rank": _env_int("LOCAL_RANK") if rank is not None else None}


#: The hunt running in this process (hunts do not nest), for a forked child to set it aside.
_running: "Hunt | None" = None


def running_hunt() -> "Hunt | None":
    """The hunt running in this process, if any."""
    return _running


def _meta(**fields: Any) -> TraceMeta:
    """A TraceMeta with the versions every hunt's trace carries, plus ``fields``."""
    return TraceMeta(
        copyhunt_version=copyhunt.__version__,
        torch_version=torch.__version__,
        python=platform.python_version(),
        **fields,
    )


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Hunt:
    """A running (or finished) hunt: a context manager, or ``start()`` / ``stop()`` by hand."""

    def __init__(
        self,
        *,
        kinds: Iterable[str] | str | None = None,
        region: str | None = None,
        site: str | None = None,
        op: str | None = None,
        focus: Iterable[str] = (),
        hide: Iterable[str] = (),
        stack_depth: int = 8,
        device_trace: bool = False,
        record_ops: bool = True,
        compiled: str = "compiled",
        max_ops: int | None = None,
    ) -> None:
        if compiled not in COMPILED_MODES:
            raise HuntOptionError(f"compiled must be one of {', '.join(map(repr, COMPILED_MODES))}, got {compiled!r}")
        try:
            self.selection = Selection.parse(kinds=kinds, region=region, site=site, op=op, names={"kinds": "kinds"})
        except SelectionError as exc:
            raise HuntOptionError(str(exc)) from None
        if not isinstance(stack_depth, int) or isinstance(stack_depth, bool) or stack_depth < 1:
            raise HuntOptionError(f"stack_depth must be an integer >= 1, got {stack_depth!r}")
        self.stack_depth = stack_depth
        if max_ops is not None and (not isinstance(max_ops, int) or isinstance(max_ops, bool) or max_ops < 1):
            raise HuntOptionError(f"max_ops must be an integer >= 1 (or None: keep every op record), got {max_ops!r}")
        self.max_ops = max_ops
        #: Set before stop() to leave the device join for ``join_device()`` (the CLI saves the raw trace first).
        self.defer_device_join = False
        #: Set before stop() to record file paths relative to this project root (the CLI's runner does;
        #: ``copyhunt.attribution.rebase_paths``), once per distinct frame while the records are built.
        self.paths_root: str | None = None
        self.device_trace = bool(device_trace)
        self.record_ops = bool(record_ops)
        self.compiled = compiled
        self._compiled: Any = None  # CompiledCapture or EagerCompileNote while running
        self._rule, self._attribute = make_attributor(focus, hide, stack_depth)
        self.focus = self._rule.focus
        self.hide = self._rule.hide
        self.trace: Trace | None = None
        self._view: TraceView | None = None
        self._viewed: Trace | None = None  # the trace _view was made from
        self._capture: DispatchCapture | None = None
        self._started = False
        self._device: Any = None
        self._started_at: str | None = None
        self._t0 = 0.0
        self._error: BaseException | None = None

    # --- results -------------------------------------------------------------------------

    @property
    def copies(self) -> tuple[Copy, ...]:
        """The copies of the finished hunt the hunt's selection is about, judged (``view.copies``)."""
        return self.view.copies

    @property
    def view(self) -> TraceView:
        """The finished hunt as a reader sees it: judged, narrowed to its ``kinds`` / ``region``."""
        if self.trace is None:
            raise HuntOptionError("the hunt has not finished yet: read .copies after the with-block (or after stop())")
        if self._view is None or self._viewed is not self.trace:
            from copyhunt.analysis import ensure_judged  # the analysis loads only for a reader

            self._viewed = self.trace
            self._view = view(ensure_judged(self.trace), self.selection)
        return self._view

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> "Hunt":
        """Start recording in the calling thread (and in threads it starts from now on)."""
        if self._started:
            raise HuntActiveError("this hunt was already started; create a new copyhunt.hunt() for another run")
        device = None
        if self.device_trace:
            device = self._device_capture()
            device.__enter__()
        op_range = getattr(device, "op_range", None)
        capture = DispatchCapture(
            rule=self._rule,
            stack_depth=self.stack_depth,
            op_range=op_range,
            record_ops=self.record_ops,
            eager_compiled=self.compiled == "eager",
            max_ops=self.max_ops,
        )
        from copyhunt.capture.compiled import CompiledCapture, EagerCompileNote

        compiled = CompiledCapture(capture) if self.compiled == "compiled" else EagerCompileNote()
        try:
            capture.start()
            compiled.start()
            open_notes()
        except BaseException:
            if capture.active:
                capture.stop()
            if device is not None:
                device.__exit__(None, None, None)
            raise
        self._compiled = compiled
        self._device = device
        self._capture = capture
        self._started = True
        global _running
        _running = self
        self._started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0 = time.perf_counter()
        return self

    def stop(self, error: BaseException | None = None) -> Trace:
        """Stop recording and build ``trace``; pass the exception that ended the block, if any."""
        if self.trace is not None:
            return self.trace
        capture = self._capture
        if capture is None:
            raise HuntActiveError("stop() called on a hunt that was never started")
        compiled = self._compiled
        try:
            capture.stop()
        except HuntActiveError:
            raise  # stopped from another thread: nothing was stopped, the hunt goes on
        except BaseException:
            # Inductor's config and the compiled-graph wrapper are restored whatever happened.
            if compiled is not None:
                compiled.stop()
            raise
        compiled_out = compiled.stop() if compiled is not None else None
        program_notes = close_notes()
        _forget_running(self)
        duration = time.perf_counter() - self._t0
        notes: list[str] = []
        device = self._device
        if device is not None:
            try:
                device.__exit__(type(error) if error is not None else None, error, None)
            except Exception as exc:  # noqa: BLE001 - never mask the user's exception with ours
                if error is None:
                    raise
                notes.append(f"device capture failed: {_one_line(exc)}")
        relocate = None
        if self.paths_root is not None:
            from copyhunt.attribution import frame_relocator

            relocate = frame_relocator(self.paths_root)
        result = capture.build(self._attribute) if relocate is None else capture.build(self._attribute, relocate)
        notes.extend(result.notes)
        notes.extend(program_notes)  # what the program said through copyhunt.note()
        copies = result.copies
        compiled_hunt: CompiledHunt | None = None
        if self.compiled == "eager":
            from copyhunt.capture.compiled import eager_notes

            notes.extend(eager_notes(compiled_out or []))
            compiled_hunt = CompiledHunt(mode="eager", ran_eagerly=tuple(compiled_out or ()))
        elif compiled is not None:
            graph_copies, graph_notes, compiled_hunt = compiled.build(self._attribute)
            if graph_copies:
                copies = sorted([*copies, *graph_copies], key=lambda c: c.seq)
            notes.extend(graph_notes)
        if not self.record_ops:
            notes.append("copies only (record_ops=False): no per-op records, so verdicts that need them cannot be judged")
        ops_dropped = 0
        if self.max_ops is not None and self.record_ops and len(result.ops) >= self.max_ops:
            # Every numbered op is recorded in a full hunt, so the first kept op's seq counts those dropped.
            ops_dropped = result.ops[0].seq
            if ops_dropped:
                notes.append(
                    f"ring mode (--max-ops {self.max_ops}): the {ops_dropped} oldest op records were dropped "
                    f"(history starts at op #{ops_dropped}); every copy is kept, and those made before op "
                    f"#{ops_dropped} are not judged (shown as not proven)"
                )
        meta = _meta(
            device=describe_device(),
            started_at=self._started_at,
            duration_s=round(duration, 6),
            complete=error is None,
            error=None if error is None else _one_line(error),
            focus=tuple(self.focus),
            hide=tuple(self.hide),
            view=self.selection.to_json(),
            ops_complete=self.record_ops and ops_dropped == 0,
            notes=tuple(notes),
            compiled=compiled_hunt,
            max_ops=self.max_ops,
            ops_dropped=ops_dropped,
            **describe_process(),
        )
        # Every copy is kept: the selection is a view over the capture (recorded in meta.view).
        trace = Trace(meta=meta, copies=tuple(copies), ops=tuple(result.ops), storages=tuple(result.storages))
        # Drop the raw capture: it holds no tensors, but it is large and no longer needed.
        self._capture = None
        self._compiled = None
        self._error = error
        if device is not None and not self.defer_device_join:
            trace = self.join_device(trace)
        self.trace = trace
        return trace

    @property
    def device_join_pending(self) -> bool:
        """True while a device capture's events wait for ``join_device`` (``defer_device_join``)."""
        return self._device is not None and self._capture is None

    def join_device(self, trace: Trace) -> Trace:
        """``trace`` joined with the device capture's GPU events (stop() does it unless deferred)."""
        device = self._device
        if device is None:
            return trace
        error = self._error
        try:
            trace = device.join(trace)
            if self.compiled == "compiled" and getattr(device, "kineto", None) is not None:
                from copyhunt.capture.compiled import join_compiled

                trace = join_compiled(trace, device.kineto)
        except Exception as exc:  # noqa: BLE001
            if error is None:
                raise
            trace = replace(trace, meta=replace(trace.meta, notes=trace.meta.notes + (f"device join failed: {_one_line(exc)}",)))
        self._device = None
        self.trace = trace
        return trace

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's hunt, copied by fork, without building its trace.

        Its modes pass every op through from now on, so the child can start a hunt of its own; the
        parent's records stay with the parent (the child's copy of them is discarded).
        """
        capture, compiled = self._capture, self._compiled
        _forget_running(self)
        if capture is not None:
            try:
                capture.stop()
            except Exception:  # noqa: BLE001 - forked from another thread: its mode is not ours to pop
                capture.forget()
        if compiled is not None:
            compiled.stop()
        close_notes()
        self._capture = self._compiled = self._device = None
        self.trace = Trace(meta=_meta(complete=False, notes=("set aside in a forked child",)))

    def __enter__(self) -> "Hunt":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop(exc)
        except Exception as ours:
            if exc is None:
                raise
            # Never let a failure of ours replace the user's exception: keep an empty, marked trace.
            self.trace = Trace(
                meta=_meta(complete=False, error=_one_line(exc), notes=(f"copyhunt could not build the trace: {_one_line(ours)}",))
            )
        # Returning None lets the block's exception propagate unchanged.
        return None

    @staticmethod
    def _device_capture() -> Any:
        try:
            from copyhunt.capture.device import DeviceCapture  # type: ignore[import-not-found]
        except ModuleNotFoundError as exc:
            if exc.name == "copyhunt.capture.device":
                raise NoDeviceError(
                    "device capture is not available: copyhunt.capture.device is missing from this install; "
                    "run without device_trace (--no-device-trace)"
                ) from None
            raise
        return DeviceCapture()


def _forget_running(h: Hunt) -> None:
    global _running
    if _running is h:
        _running = None


def hunt(
    *,
    kinds: Iterable[str] | str | None = None,
    region: str | None = None,
    site: str | None = None,
    op: str | None = None,
    focus: Iterable[str] = (),
    hide: Iterable[str] = (),
    stack_depth: int = 8,
    device_trace: bool = False,
    record_ops: bool = True,
    compiled: str = "compiled",
    max_ops: int | None = None,
) -> Hunt:
    """Record every copy (and every op's storage accesses) made inside the returned context manager.

    ``kinds`` / ``region`` / ``site`` / ``op``: which copies ``h.copies`` shows (a
    ``copyhunt.selection.Selection``: kinds d2d, h2d, d2h, p2p; globs on the region at any depth, the
    site's file, the op); the trace keeps every copy and records this view in ``meta.view``.
    ``focus`` / ``hide``: file globs that move the attributed site;
    ``stack_depth``: frames kept per copy from the site outward; ``device_trace``: also run the
    device capture (GPU timings); ``record_ops=False``: copies only, no per-op accesses (cheaper);
    ``compiled``: "compiled" keeps torch.compile'd code compiled and records the copies Inductor kept
    (origin "compiled", one per copy per execution), "eager" runs it op by op as if not compiled;
    ``max_ops``: ring mode for endless runs, keep only the newest N op records (every copy is kept;
    copies older than the kept history are not judged; ``meta.ops_dropped`` says how many were dropped).
    """
    return Hunt(
        kinds=kinds,
        region=region,
        site=site,
        op=op,
        focus=focus,
        hide=hide,
        stack_depth=stack_depth,
        device_trace=device_trace,
        record_ops=record_ops,
        compiled=compiled,
        max_ops=max_ops,
    )
