"""The shared workspace: one grow-only buffer, views from offset 0, aligned simultaneous views."""

from __future__ import annotations

import torch

from copyhunt_moe.workspace import ALIGN_BYTES, WorkspaceManager


def test_get_is_a_view_of_the_one_shared_buffer() -> None:
    ws = WorkspaceManager()
    a = ws.get((4, 8), torch.bfloat16, "cpu")
    b = ws.get((2, 8), torch.float32, "cpu")
    assert a.shape == (4, 8) and a.dtype == torch.bfloat16 and a.is_contiguous()
    # Both views start at byte 0 of the same storage: the second request overwrites the first.
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() == ws.buffer.data_ptr()
    assert a.data_ptr() == b.data_ptr()


def test_buffer_only_grows() -> None:
    ws = WorkspaceManager()
    ws.get((16, 16), torch.bfloat16, "cpu")  # 512 bytes
    assert (ws.grow_count, ws.nbytes) == (1, 512)
    ws.get((4, 4), torch.bfloat16, "cpu")  # smaller: reuse
    assert (ws.grow_count, ws.nbytes) == (1, 512)
    ws.get((32, 16), torch.bfloat16, "cpu")  # 1024 bytes: grow
    assert (ws.grow_count, ws.nbytes) == (2, 1024)
    ws.get((16, 16), torch.bfloat16, "cpu")
    assert (ws.grow_count, ws.nbytes) == (2, 1024)


def test_simultaneous_views_do_not_overlap_and_are_aligned() -> None:
    ws = WorkspaceManager()
    a, b = ws.get_simultaneous(((3, 5), torch.bfloat16), ((7,), torch.float32), device="cpu")
    # a: 15 * 2 = 30 bytes -> b starts at the next 256-byte boundary.
    assert b.data_ptr() - a.data_ptr() == ALIGN_BYTES
    assert ws.nbytes == ALIGN_BYTES * 2  # 256 + round_up(28) = 512
    a.fill_(1.0)
    b.fill_(2.0)
    assert bool((a == 1.0).all()) and bool((b == 2.0).all())
