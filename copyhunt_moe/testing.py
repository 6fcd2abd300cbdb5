"""Test helpers that need no copyhunt tracer: a dispatch mode counting copy ops, poisoned outputs, tolerances.

``CopyCounter`` is deliberately independent of ``copyhunt.capture``: the MoE tests check the two copies
structurally with it, and the lead cross-checks the same numbers with ``copyhunt.hunt``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten overload packets that write a copy of tensor data (same list the tracing notes give).
COPY_OPS = frozenset(
    {"copy_", "_to_copy", "clone", "cat", "stack", "index_put_", "constant_pad_nd", "repeat", "index_copy_",
     "index_copy", "_copy_from", "_copy_from_and_resize", "expand_copy", "contiguous"}
)

_MOE_DIR = str(Path(__file__).resolve().parent)


@dataclass(frozen=True)
class SeenCopy:
    """One copy op: the overload and the innermost ``copyhunt_moe`` frame that issued it."""

    op: str
    file: str
    line: int
    function: str
    noop: bool  # copy_ of a tensor onto itself (PyTorch does no work)


class CopyCounter(TorchDispatchMode):
    """Records every copy-like aten op with the innermost ``copyhunt_moe`` (else user) frame."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[SeenCopy] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in COPY_OPS:
            noop = name == "copy_" and len(args) >= 2 and args[0] is args[1]
            frame = sys._getframe(1)
            chosen = None
            while frame is not None:
                filename = frame.f_code.co_filename
                if filename.startswith(_MOE_DIR) and not filename.endswith("testing.py"):
                    chosen = frame
                    break
                frame = frame.f_back
            if chosen is None:
                self.copies.append(SeenCopy(str(func), "?", 0, "?", noop))
            else:
                self.copies.append(
                    SeenCopy(str(func), chosen.f_code.co_filename, chosen.f_lineno, chosen.f_code.co_name, noop)
                )
        return func(*args, **kwargs)

    def at(self, file: str, line: int) -> list[SeenCopy]:
        """The copies issued from ``file:line``."""
        return [c for c in self.copies if c.file == file and c.line == line]


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill ``t`` with NaN so an element the code under test never writes fails every comparison."""
    return t.fill_(float("nan"))


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; NaN anywhere gives ``inf``."""
    o, r = out.double(), ref.double()
    if not torch.isfinite(o).all():
        return float("inf")
    return float((o - r).norm() / r.norm().clamp_min(1e-30))


#: ||out - ref|| / ||ref|| limits (the device tool's METHOD.md): bf16 operands land in 1e-3..1e-2.
TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 5e-3, torch.float32: 1e-4}
