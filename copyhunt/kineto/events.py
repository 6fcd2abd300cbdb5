"""The Kineto event model: one complete event of a Chrome trace and what its category and name say.

Standard library only, so the CPU test suite reads real GPU traces (``traces/``) without a GPU.
Event names and args were checked on real traces from torch 2.11 + CUDA 13.0 (H200); see
``docs/device.md``.

Facts this relies on (torch 2.11, ROCm builds use the same names):
- GPU work: ``cat`` ``kernel`` / ``gpu_memcpy`` / ``gpu_memset`` with args ``External id`` (the
  launching ``cpu_op``), ``correlation`` (the runtime call), ``stream``, ``device``; memcpys add
  ``bytes``. Graph-replayed nodes carry ``correlation`` (the ``cudaGraphLaunch``) and no External id.
- Runtime calls: ``cuda_runtime`` / ``cuda_driver`` on the launching thread.
- ``user_annotation`` = ``record_function`` ranges (CPU side); ``python_function`` = with_stack frames,
  named ``file.py(LINE): func``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

GPU_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset"})
RUNTIME_CATS = frozenset({"cuda_runtime", "cuda_driver", "Runtime", "hip_runtime", "runtime"})
CPU_OP_CATS = frozenset({"cpu_op", "Operator", "operator"})

#: Copy kernels: a CUDA d2d copy_ is a memcpy only for contiguous same-dtype tensors; otherwise one
#: of these kernels runs. ``memcpy128`` is how a graph's memcpy node may replay; ROCm blit kernels
#: are named ``__amd_rocclr_copyBuffer*``.
COPY_KERNEL_RE = re.compile(
    r"direct_copy_kernel|_copy_kernel_cuda|copy_kernel_impl|CatArrayBatchedCopy|index_put_kernel"
    r"|\bmemcpy\d+\b|__amd_rocclr_copy|rocclr_copyBuffer|copyBuffer"
)
_MEMCPY_KIND = {"DtoD": "d2d", "HtoD": "h2d", "DtoH": "d2h", "PtoP": "p2p", "HtoH": "d2d"}
_MEMCPY_RE = re.compile(r"^Memcpy\s+(\w+)")
_LAUNCH_RE = re.compile(r"(?i)(launchkernel|launchcooperativekernel|memcpy|memset)")
_PYFRAME_RE = re.compile(r"^(?P<file>.+)\((?P<line>\d+)\): (?P<func>.+)$")


@dataclass(slots=True, eq=False)
class KEvent:
    """One complete ('X') event of a Chrome trace; times in microseconds (treat as read-only).

    Not frozen and slotted: a frozen dataclass's __init__ costs 2-3x more, and a trace holds
    thousands of these (parsing is part of every device-captured hunt's cost).
    """

    cat: str
    name: str
    ts: float
    dur: float
    pid: Any
    tid: Any
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        """End time (us)."""
        return self.ts + self.dur

    @property
    def external_id(self) -> int | None:
        """The ``External id`` arg: links GPU work and runtime calls to their cpu_op."""
        v = self.args.get("External id")
        return None if v is None else int(v)

    @property
    def correlation(self) -> int | None:
        """The ``correlation`` arg: links a GPU event to the runtime call that issued it."""
        v = self.args.get("correlation")
        return None if v is None else int(v)

    @property
    def stream(self) -> int | None:
        """The GPU stream (GPU events only)."""
        v = self.args.get("stream")
        return None if v is None else int(v)

    @property
    def nbytes(self) -> int | None:
        """Bytes moved (memcpy/memset events only)."""
        v = self.args.get("bytes")
        return None if v is None else int(v)


#: Substrings one of which every alternative of ``COPY_KERNEL_RE`` contains: a plain ``in`` rules most
#: kernels out before the regex, which costs about 40 ns per character (a templated CUDA kernel name
#: runs to 5,000 characters: 0.2 ms a search on the H200 host).
_COPY_HINTS = ("copy", "Copy", "memcpy", "index_put_kernel")
_MEMCPY_NODE_RE = re.compile(r"\bmemcpy\d+\b")


def _copy_kernel(name: str) -> bool:
    """``COPY_KERNEL_RE.search(name)``, with the cheap substring screen first."""
    return any(h in name for h in _COPY_HINTS) and COPY_KERNEL_RE.search(name) is not None


@functools.lru_cache(maxsize=8192)
def _copy_kind(cat: str, name: str) -> str | None:
    m = _MEMCPY_RE.match(name)
    if m is not None or cat in ("gpu_memcpy", "Memcpy"):
        direction = m.group(1) if m else ""
        return _MEMCPY_KIND.get(direction, "d2d")
    if cat in ("kernel", "Kernel") and _copy_kernel(name):
        return "d2d"
    return None


def copy_kind(ev: KEvent) -> str | None:
    """The copy kind of a GPU event (``d2d``/``h2d``/``d2h``/``p2p``), or None if it copies nothing.

    Memoised by category and name: a trace launches the same kernels over and over, and the join asks
    about every GPU event up to three times.
    """
    return _copy_kind(ev.cat, ev.name)


def node_type(ev: KEvent) -> str:
    """Node type of a GPU event as a graph node: memcpy, memset or kernel (``memcpy128`` is a memcpy node)."""
    if ev.cat in ("gpu_memcpy", "Memcpy") or ("memcpy" in ev.name and _MEMCPY_NODE_RE.search(ev.name)):
        return "memcpy"
    if ev.cat in ("gpu_memset", "Memset"):
        return "memset"
    return "kernel"


def launch_type(ev: KEvent) -> str | None:
    """Node type a runtime call would add to a graph under capture (None: not a launch)."""
    n = ev.name.lower()
    if "graphlaunch" in n or not _LAUNCH_RE.search(ev.name):
        return None
    if "memcpy" in n:
        return "memcpy"
    if "memset" in n:
        return "memset"
    return "kernel"


def parse_python_frame(name: str) -> tuple[str, int, str] | None:
    """``file.py(12): func`` -> (file, 12, func); None for builtins like ``<built-in method ...>``."""
    m = _PYFRAME_RE.match(name)
    if m is None:
        return None
    return m.group("file"), int(m.group("line")), m.group("func")


def short_kernel(name: str) -> str:
    """A readable kernel name: C++ templates and argument lists dropped, the copy functor kept."""
    if name.startswith("Memcpy") or name.startswith("Memset"):
        return name
    for key in ("direct_copy_kernel_cuda", "bfloat16_copy_kernel_cuda", "float16_copy_kernel_cuda", "CatArrayBatchedCopy", "index_put_kernel"):
        if key in name:
            return key
    head = name.split("(")[0].split("<")[0]
    head = head.replace("void ", "").strip()
    return head.rsplit("::", 1)[-1] or name[:60]
