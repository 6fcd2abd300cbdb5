"""``copyhunt.hunt()``: the public facade that records every tensor copy a block of code makes.

    with copyhunt.hunt() as h:
        model(x)
    h.copies          # CopyRecord per copy, attributed to the user's source line
    h.trace           # records.Trace: copies, every op's storage accesses, storages, meta

It wires the dispatch capture (``copyhunt.capture.dispatch``), attribution (``copyhunt.attribution``)
and, when asked, the device capture (``copyhunt.capture.device``, imported lazily).
Hunts do not nest: starting one while another runs raises ``HuntActiveError``.
"""

from __future__ import annotations

import platform
import sys
import types
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
from copyhunt.capture.regions import SEP
from copyhunt.errors import CopyhuntError, NoDeviceError
from copyhunt.records import COPY_KINDS, CopyRecord, Trace, TraceMeta

__all__ = ["hunt", "Hunt", "HuntActiveError", "HuntOptionError", "in_region", "describe_device"]


class HuntOptionError(CopyhuntError):
    """A hunt option has a bad value (unknown copy kind, empty region, stack depth < 1)."""


def _parse_kinds(kinds: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [k for k in kinds.split(",") if k.strip()]
    out = tuple(k.strip() for k in kinds)
    bad = [k for k in out if k not in COPY_KINDS]
    if bad:
        raise HuntOptionError(f"unknown copy kind {bad[0]!r}; valid kinds: {', '.join(COPY_KINDS)}")
    return out


def in_region(path: str | None, wanted: str) -> bool:
    """True when region path ``path`` lies inside ``wanted`` at any nesting level.

    ``wanted`` may itself be a path ("decode/moe"): its names must appear consecutively in ``path``.
    """
    if path is None:
        return False
    have = path.split(SEP)
    want = wanted.split(SEP)
    n = len(want)
    return any(have[i : i + n] == want for i in range(len(have) - n + 1))


def describe_device() -> str:
    """The accelerator the traced code used ("cuda:0 NVIDIA H100 80GB HBM3"), else "cpu"."""
    # Only when CUDA is already initialised: initialising it just to describe it would be a side
    # effect, and a program that never touched the GPU ran its copies on the CPU.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        idx = torch.cuda.current_device()
        return f"cuda:{idx} {torch.cuda.get_device_name(idx)}"
    return "cpu"


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
        focus: Iterable[str] = (),
        hide: Iterable[str] = (),
        stack_depth: int = 8,
        device_trace: bool = False,
        record_ops: bool = True,
    ) -> None:
        if region is not None and (not isinstance(region, str) or not region.strip(SEP).strip()):
            raise HuntOptionError(f"region must be a non-empty region name or path, got {region!r}")
        if not isinstance(stack_depth, int) or isinstance(stack_depth, bool) or stack_depth < 1:
            raise HuntOptionError(f"stack_depth must be an integer >= 1, got {stack_depth!r}")
        self._moe_mark = 0
        self.kinds = _parse_kinds(kinds)
        self.region = region.strip(SEP) if region is not None else None
        self.stack_depth = stack_depth
        self.device_trace = bool(device_trace)
        self.record_ops = bool(record_ops)
        self._rule, self._attribute = make_attributor(focus, hide, stack_depth)
        self.focus = self._rule.focus
        self.hide = self._rule.hide
        self.trace: Trace | None = None
        self._capture: DispatchCapture | None = None
        self._started = False
        self._device: Any = None
        self._started_at: str | None = None
        self._t0 = 0.0

    # --- results -------------------------------------------------------------------------

    @property
    def copies(self) -> tuple[CopyRecord, ...]:
        """The copy records of the finished hunt (after the kind / region filters)."""
        if self.trace is None:
            raise HuntOptionError("the hunt has not finished yet: read .copies after the with-block (or after stop())")
        return self.trace.copies

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
            rule=self._rule, stack_depth=self.stack_depth, op_range=op_range, record_ops=self.record_ops
        )
        try:
            capture.start()
        except BaseException:
            if device is not None:
                device.__exit__(None, None, None)
            raise
        self._device = device
        self._capture = capture
        self._started = True
        self._started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._moe_mark = _bundled_moe_mark()
        self._t0 = time.perf_counter()
        return self

    def stop(self, error: BaseException | None = None) -> Trace:
        """Stop recording and build ``trace``; pass the exception that ended the block, if any."""
        if self.trace is not None:
            return self.trace
        capture = self._capture
        if capture is None:
            raise HuntActiveError("stop() called on a hunt that was never started")
        capture.stop()
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
        result = capture.build(self._attribute)
        notes.extend(result.notes)
        notes.extend(_bundled_moe_notes(self._moe_mark))
        copies = result.copies
        if self.kinds is not None:
            copies = [c for c in copies if c.kind in self.kinds]
        if self.region is not None:
            copies = [c for c in copies if in_region(c.region, self.region)]
        filters: dict[str, Any] = {}
        if self.kinds is not None:
            filters["kinds"] = list(self.kinds)
        if self.region is not None:
            filters["region"] = self.region
        if self.focus:
            filters["focus"] = list(self.focus)
        if self.hide:
            filters["hide"] = list(self.hide)
        if not self.record_ops:
            notes.append("copies only (record_ops=False): no per-op records, so verdicts that need them cannot be judged")
        meta = TraceMeta(
            copyhunt_version=copyhunt.__version__,
            torch_version=torch.__version__,
            python=platform.python_version(),
            device=describe_device(),
            started_at=self._started_at,
            duration_s=round(duration, 6),
            complete=error is None,
            error=None if error is None else _one_line(error),
            filters=filters,
            notes=tuple(notes),
        )
        trace = Trace(meta=meta, copies=tuple(copies), ops=tuple(result.ops), storages=tuple(result.storages))
        if device is not None:
            try:
                trace = device.join(trace)
            except Exception as exc:  # noqa: BLE001
                if error is None:
                    raise
                trace = replace(trace, meta=replace(trace.meta, notes=trace.meta.notes + (f"device join failed: {_one_line(exc)}",)))
        self.trace = trace
        # Drop the raw capture: it holds no tensors, but it is large and no longer needed.
        self._device = None
        self._capture = None
        return trace

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
                meta=TraceMeta(
                    copyhunt_version=copyhunt.__version__,
                    torch_version=torch.__version__,
                    python=platform.python_version(),
                    complete=False,
                    error=_one_line(exc),
                    notes=(f"copyhunt could not build the trace: {_one_line(ours)}",),
                )
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


def hunt(
    *,
    kinds: Iterable[str] | str | None = None,
    region: str | None = None,
    focus: Iterable[str] = (),
    hide: Iterable[str] = (),
    stack_depth: int = 8,
    device_trace: bool = False,
    record_ops: bool = True,
) -> Hunt:
    """Record every copy (and every op's storage accesses) made inside the returned context manager.

    ``kinds``: keep only these copy kinds (d2d, h2d, d2h, p2p); ``region``: keep only copies inside
    that region (any depth); ``focus`` / ``hide``: file globs that move the attributed site;
    ``stack_depth``: frames kept per copy from the site outward; ``device_trace``: also run the
    device capture (GPU timings); ``record_ops=False``: copies only, no per-op accesses (cheaper).
    """
    return Hunt(
        kinds=kinds,
        region=region,
        focus=focus,
        hide=hide,
        stack_depth=stack_depth,
        device_trace=device_trace,
        record_ops=record_ops,
    )


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`hunt`.

    Importing ``copyhunt.hunt`` (the module) makes Python set the package attribute ``copyhunt.hunt``
    to the module, shadowing the lazily exported function; making the module callable keeps
    ``copyhunt.hunt(...)`` working either way.
    """

    def __call__(self, **kwargs: Any) -> Hunt:
        return hunt(**kwargs)


sys.modules[__name__].__class__ = _CallableModule


def _bundled_moe_mark() -> int:
    # The bundled MoE remembers which experts backends ran (it imports nothing of ours); ask it only
    # when the program loaded it.
    backends = sys.modules.get("copyhunt.moe.backends")
    return backends.usage_mark() if backends is not None else 0


def _bundled_moe_notes(since: int) -> list[str]:
    """Facts about the bundled MoE backends that ran during the hunt (e.g. AITER's destination mode)."""
    backends = sys.modules.get("copyhunt.moe.backends")
    return backends.used_backend_notes(since) if backends is not None else []
