"""An independent copy counter for the real-model corpus: what copyhunt must agree with, site by site.

Written apart from copyhunt (it imports nothing from it) with the simplest rules that define a copy:
- the copy ops are the ones copyhunt documents (README "Recorded copy ops"): ``copy_`` (a self-copy of
  the same view is a no-op), ``clone``, ``_to_copy``, ``cat`` / ``stack`` (and ``out=``), ``repeat``,
  ``constant_pad_nd``, ``index_put_`` / ``index_copy_``, and ``item()``'s ``_local_scalar_dense`` when
  the tensor lives on a device;
- bytes are what lands in the destination: the output's size, the indexed elements for ``index_put_``
  (counted by running the same indexing), the source's elements for ``index_copy_``;
- the line is the innermost Python frame outside torch, the standard library and this file.

It must run under ``torch.no_grad()`` on ordinary tensors: there torch's C++ dispatcher itself runs the
composite kernels (dropout, one_hot, matmul...) before any mode sees an op, exactly as in the untraced
program. A composite op reaching this mode means that precondition broke, and it raises.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_TORCH = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "")
_STDLIB = os.path.join(os.path.abspath(sysconfig.get_paths()["stdlib"]), "")
_HERE = os.path.abspath(__file__)

Key = tuple[str, int, str]  # (file, line, op)


def _outside(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    if path == _HERE or path.startswith(_TORCH):
        return False
    return not path.startswith(_STDLIB) or "-packages" + os.sep in path


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class CopyCounter(TorchDispatchMode):
    """Counts copies per (file, line, op): ``count[key]``, ``nbytes[key]``, ``noop[key]``."""

    def __init__(self) -> None:
        super().__init__()
        self.count: Counter[Key] = Counter()
        self.nbytes: Counter[Key] = Counter()
        self.noop: Counter[Key] = Counter()
        self.kinds: dict[Key, set[str]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd"):
            raise RuntimeError(f"composite op {func} reached the reference: run it under torch.no_grad() on ordinary tensors")
        out = func(*args, **kwargs)
        found = self._copy(func, args, kwargs, out)
        if found is not None:
            nbytes, noop, src, dst = found
            f = sys._getframe(1)
            while f is not None and not _outside(f.f_code.co_filename):
                f = f.f_back
            key = (f.f_code.co_filename, f.f_lineno, str(func)) if f is not None else ("?", 0, str(func))
            self.count[key] += 1
            self.nbytes[key] += nbytes
            self.noop[key] += noop
            kind = "d2d" if src == dst else "h2d" if src.type == "cpu" else "d2h" if dst.type == "cpu" else "p2p"
            self.kinds.setdefault(key, set()).add(kind)
        return out

    def _copy(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> tuple[int, bool, torch.device, torch.device] | None:
        """(bytes, no-op, source device, destination device) when ``func`` copied, else None."""
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            same = (
                dst.data_ptr() == src.data_ptr() and dst.dtype == src.dtype and dst.shape == src.shape
                and dst.stride() == src.stride() and dst.device == src.device
            )
            return _nbytes(dst), same, src.device, dst.device
        if func in (aten.clone.default, aten._to_copy.default, aten.repeat.default, aten.constant_pad_nd.default):
            return _nbytes(out), False, args[0].device, out.device
        if func in (aten.cat.default, aten.stack.default):
            return _nbytes(out), False, args[0][0].device, out.device
        if func in (aten.cat.out, aten.stack.out):
            return _nbytes(kwargs["out"]), False, args[0][0].device, kwargs["out"].device
        if func is aten.index_put_.default:
            dst, indices, values = args[0], args[1], args[2]
            picked = aten.index.Tensor(dst, indices)  # the elements the write lands on
            return _nbytes(picked), False, values.device, dst.device
        if func is aten.index_copy_.default:
            dst, source = args[0], args[3]
            return source.numel() * dst.element_size(), False, source.device, dst.device
        if func is aten._local_scalar_dense.default and args[0].device.type != "cpu":
            return args[0].element_size(), False, args[0].device, torch.device("cpu")
        return None

    def table(self) -> dict[Key, tuple[int, int, int]]:
        """{(file, line, op): (copies, bytes, no-op copies)}."""
        return {k: (self.count[k], self.nbytes[k], self.noop[k]) for k in self.count}
