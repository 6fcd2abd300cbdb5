"""``copyhunt.region(name)``: label records with a region path, and show the same range in other profilers.

A region is a context manager and a decorator. Regions nest per thread (``"outer/inner"``); each one also
opens a ``torch.profiler.record_function`` range (seen by torch.profiler / Kineto) and, when CUDA is
available and already initialised, an NVTX range (seen by Nsight Systems; a ROCTx range on ROCm builds).
It works outside any hunt: then it is only a profiler range.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType
from typing import Any

import torch

from copyhunt.errors import CopyhuntError
from copyhunt.selection import REGION_SEP as SEP  # one separator for recording and selecting regions


class RegionNameError(CopyhuntError, ValueError):
    """A region name is empty, not a string, or contains the path separator."""


class _RegionState(threading.local):
    """Per-thread stack of open region names and the joined path (read on every recorded op)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.path: str | None = None


_state = _RegionState()


def _nvtx_enabled() -> bool:
    # NVTX only when CUDA is really in use: initialising CUDA just to label a range would change
    # what the traced program does (and fail on machines without a driver).
    return torch.cuda.is_available() and torch.cuda.is_initialized()


class region(contextlib.ContextDecorator):
    """Label every record made inside with ``name`` (nested: ``"outer/inner"``); also a profiler range.

    Use as ``with copyhunt.region("decode"): ...`` or as a decorator ``@copyhunt.region("decode")``.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise RegionNameError(f"region name must be a non-empty string, got {name!r}")
        if SEP in name:
            raise RegionNameError(f"region name {name!r} must not contain {SEP!r} (it separates nested regions)")
        self.name = name
        self._rf: Any = None
        self._nvtx = False
        self._saved_path: str | None = None

    def _recreate_cm(self) -> "region":
        # A decorated function may recurse or run in several threads at once: each call gets
        # its own region object so enter/exit state is never shared.
        return region(self.name)

    def __enter__(self) -> "region":
        st = _state
        self._saved_path = st.path
        st.names.append(self.name)
        st.path = self.name if st.path is None else st.path + SEP + self.name
        self._rf = torch.profiler.record_function(self.name)
        self._rf.__enter__()
        if _nvtx_enabled():
            torch.cuda.nvtx.range_push(self.name)
            self._nvtx = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._nvtx:
                torch.cuda.nvtx.range_pop()
                self._nvtx = False
            if self._rf is not None:
                self._rf.__exit__(exc_type, exc, tb)
                self._rf = None
        finally:
            st = _state
            if st.names:
                st.names.pop()
            st.path = self._saved_path
        # Never swallow the block's exception.
        return None

    def __repr__(self) -> str:
        return f"copyhunt.region({self.name!r})"
