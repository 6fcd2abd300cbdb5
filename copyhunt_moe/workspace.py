"""One grow-only workspace buffer shared by every MoE layer (modelled on vLLM 0.19's workspace manager).

``get`` carves typed views out of a single byte buffer, always from offset 0, so the next MoE layer's
scratch overwrites the previous layer's: a result must never be handed back as a workspace view.
The buffer only grows (a larger request replaces it; views already handed out keep the old storage
alive), so after one warm-up call at the largest size the addresses are stable for CUDA graphs.
"""

from __future__ import annotations

import math
import threading

import torch

from copyhunt_moe.errors import MoEConfigError

#: Each view starts on a 256-byte boundary (what the caching allocator guarantees for fresh tensors).
ALIGN_BYTES = 256


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


class WorkspaceManager:
    """Owns the shared scratch buffer; thread-safe; never shrinks."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._lock = threading.Lock()
        self.grow_count = 0  # how many times the buffer was (re)allocated: tests and CUDA-graph checks

    @property
    def nbytes(self) -> int:
        """Current size of the shared buffer in bytes (0 before the first request)."""
        return 0 if self._buffer is None else self._buffer.numel()

    @property
    def buffer(self) -> torch.Tensor | None:
        """The shared byte buffer itself (for storage-identity checks in tests)."""
        return self._buffer

    def get_simultaneous(
        self, *specs: tuple[tuple[int, ...], torch.dtype], device: torch.device | str
    ) -> list[torch.Tensor]:
        """Views ``[(shape, dtype), ...]`` laid out one after another in the shared buffer."""
        device = torch.device(device)
        offsets: list[int] = []
        total = 0
        for shape, dtype in specs:
            if any(d < 0 for d in shape):
                raise MoEConfigError(f"workspace shape must be non-negative, got {shape}")
            offsets.append(total)
            itemsize = dtype.itemsize
            total = _round_up(total + math.prod(shape) * itemsize, ALIGN_BYTES)
        flat = self._ensure(total, device)
        views = []
        for (shape, dtype), offset in zip(specs, offsets):
            itemsize = dtype.itemsize
            numel = math.prod(shape)
            raw = flat[offset : offset + numel * itemsize]
            views.append(raw.view(dtype).view(shape))
        return views

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """One view of ``shape``/``dtype`` at offset 0 of the shared buffer (``flat[:M*K].view(M, K)``)."""
        return self.get_simultaneous((tuple(shape), dtype), device=device)[0]

    def release(self) -> None:
        """Drop the shared buffer (views still held keep it alive); the next request allocates anew."""
        with self._lock:
            self._buffer = None

    def _ensure(self, nbytes: int, device: torch.device) -> torch.Tensor:
        with self._lock:
            buf = self._buffer
            if buf is None or buf.device != device or buf.numel() < nbytes:
                size = max(nbytes, ALIGN_BYTES, 0 if buf is None or buf.device != device else buf.numel())
                buf = torch.empty(size, dtype=torch.uint8, device=device)
                self._buffer = buf
                self.grow_count += 1
            return buf
