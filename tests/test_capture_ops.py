"""Every copy op the capture must see: recorded once, with the right bytes, kind, line and flags.

All tensors are float32 (4 bytes) unless stated; x is 4 x 6 = 24 elements = 96 bytes.
Expected lines come from ``here()`` called on the same line as the copy.
"""

from __future__ import annotations

import inspect
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from copyhunt.hunting import hunt
from copyhunt.records import CopyRecord


def here() -> int:
    """The caller's line number."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def only_copy(fn: Callable[[], int]) -> tuple[CopyRecord, int]:
    """Run ``fn`` (returns the expected line) in a hunt; exactly one copy must be recorded."""
    with hunt() as h:
        line = fn()
    assert len(h.copies) == 1, [(c.op, c.bytes) for c in h.copies]
    c = h.copies[0]
    assert c.site is not None and c.site.file == __file__
    assert h.trace is not None and h.trace.meta.notes == ()  # no internal recording error
    return c, line


@pytest.fixture
def x() -> torch.Tensor:
    return torch.arange(24, dtype=torch.float32).reshape(4, 6)


def test_copy_(x: torch.Tensor) -> None:
    dst = torch.empty(4, 6)

    def run() -> int:
        ln = here(); dst.copy_(x)  # fmt: skip
        return ln

    c, line = only_copy(run)
    # 24 elements x 4 bytes
    assert (c.op, c.kind, c.bytes, c.noop, c.site.line) == ("aten.copy_.default", "d2d", 96, False, line)
    assert (c.shape, c.dtype, c.src_dtype, c.src_device, c.dst_device) == ((4, 6), "torch.float32", "torch.float32", "cpu", "cpu")
    assert c.site.function == "run"
    assert c.src_storage != c.dst_storage


def test_slice_assignment_is_one_copy_(x: torch.Tensor) -> None:
    dst = torch.zeros(4, 6)

    def run() -> int:
        ln = here(); dst[1:3] = x[1:3]  # fmt: skip
        return ln

    c, line = only_copy(run)
    # 2 rows x 6 columns x 4 bytes
    assert (c.op, c.bytes, c.shape, c.site.line) == ("aten.copy_.default", 48, (2, 6), line)


def test_clone(x: torch.Tensor) -> None:
    def run() -> int:
        ln = here(); x.clone()  # fmt: skip
        return ln

    c, line = only_copy(run)
    assert (c.op, c.bytes, c.site.line, c.src_contiguous, c.dst_contiguous) == ("aten.clone.default", 96, line, True, True)


def test_to_other_dtype_is_to_copy(x: torch.Tensor) -> None:
    def run() -> int:
        ln = here(); x.to(torch.float64)  # fmt: skip
        return ln

    c, line = only_copy(run)
    # 24 elements x 8 bytes (float64 destination)
    assert (c.op, c.bytes, c.dtype, c.src_dtype, c.site.line) == ("aten._to_copy.default", 192, "torch.float64", "torch.float32", line)


def test_contiguous_of_transpose_copies(x: torch.Tensor) -> None:
    def run() -> int:
        ln = here(); x.t().contiguous()  # fmt: skip
        return ln

    c, line = only_copy(run)
    assert (c.op, c.bytes, c.shape, c.site.line) == ("aten.clone.default", 96, (6, 4), line)
    assert (c.src_contiguous, c.dst_contiguous) == (False, True)


def test_reshape_of_non_contiguous_copies(x: torch.Tensor) -> None:
    def run() -> int:
        ln = here(); x.t().reshape(-1)  # fmt: skip
        return ln

    c, line = only_copy(run)
    assert (c.op, c.bytes, c.site.line) == ("aten.clone.default", 96, line)


@pytest.mark.parametrize(
    "name, expected_op",
    [("cat", "aten.cat.default"), ("stack", "aten.stack.default")],
)
def test_cat_and_stack(x: torch.Tensor, name: str, expected_op: str) -> None:
    fn = getattr(torch, name)

    def run() -> int:
        ln = here(); fn([x, x])  # fmt: skip
        return ln

    c, line = only_copy(run)
    # two 96-byte inputs -> 192 bytes written
    assert (c.op, c.bytes, c.site.line) == (expected_op, 192, line)
    assert c.src_storages == (c.src_storage, c.src_storage)  # the same x twice


@pytest.mark.parametrize(
    "name, out_shape, expected_op",
    [("cat", (8, 6), "aten.cat.out"), ("stack", (2, 4, 6), "aten.stack.out")],
)
def test_cat_and_stack_out(x: torch.Tensor, name: str, out_shape: tuple[int, ...], expected_op: str) -> None:
    fn = getattr(torch, name)
    out = torch.empty(out_shape)

    def run() -> int:
        ln = here(); fn([x, x], out=out)  # fmt: skip
        return ln

    c, line = only_copy(run)
    # two 96-byte inputs -> 192 bytes written into ``out``
    assert (c.op, c.bytes, c.site.line) == (expected_op, 192, line)
    assert c.dst_storage != c.src_storage


def test_index_put_with_int_index(x: torch.Tensor) -> None:
    dst = torch.zeros(4, 6)
    idx = torch.tensor([0, 2])
    v = torch.ones(2, 6)

    def run() -> int:
        ln = here(); dst[idx] = v  # fmt: skip
        return ln

    c, line = only_copy(run)
    # 2 indexed rows x 6 x 4 bytes
    assert (c.op, c.bytes, c.site.line) == ("aten.index_put_.default", 48, line)


def test_index_put_with_bool_mask_and_column_index() -> None:
    dst = torch.zeros(4, 6)
    mask = torch.tensor([True, False, True, True])
    cols = torch.tensor([1, 4])
    with hunt() as h:
        l1 = here(); dst[mask] = 1.0  # fmt: skip
        l2 = here(); dst[:, cols] = 2.0  # fmt: skip
    assert [(c.op, c.bytes, c.site.line) for c in h.copies] == [
        ("aten.index_put_.default", 3 * 6 * 4, l1),  # 3 selected rows of 6
        ("aten.index_put_.default", 4 * 2 * 4, l2),  # 4 rows x 2 selected columns
    ]


def test_index_copy_(x: torch.Tensor) -> None:
    dst = torch.zeros(4, 6)
    idx = torch.tensor([3, 1])
    src = torch.ones(2, 6)

    def run() -> int:
        ln = here(); dst.index_copy_(0, idx, src)  # fmt: skip
        return ln

    c, line = only_copy(run)
    # every element of src (2 x 6) lands in dst: 48 bytes
    assert (c.op, c.bytes, c.site.line) == ("aten.index_copy_.default", 48, line)


def test_repeat(x: torch.Tensor) -> None:
    def run() -> int:
        ln = here(); x.repeat(2, 3)  # fmt: skip
        return ln

    c, line = only_copy(run)
    # output 8 x 18 = 144 elements x 4 bytes
    assert (c.op, c.bytes, c.shape, c.site.line) == ("aten.repeat.default", 576, (8, 18), line)


def test_constant_pad_is_attributed_past_torch_functional(x: torch.Tensor) -> None:
    def run() -> int:
        ln = here(); F.pad(x, (1, 1))  # fmt: skip
        return ln

    c, line = only_copy(run)
    # output 4 x 8 = 32 elements x 4 bytes; F.pad lives in torch, so the site is this line
    assert (c.op, c.bytes, c.site.line) == ("aten.constant_pad_nd.default", 128, line)
    assert c.stack[0] == c.site


def test_self_copy_is_noop(x: torch.Tensor) -> None:
    with hunt() as h:
        ln = here(); x.copy_(x)  # fmt: skip
    assert [(c.op, c.noop, c.bytes, c.site.line) for c in h.copies] == [("aten.copy_.default", True, 96, ln)]
    assert h.trace is not None and h.trace.total_bytes == 0  # noop copies move nothing
    assert h.copies[0].src_storage == h.copies[0].dst_storage


def test_copy_between_overlapping_views_is_not_noop(x: torch.Tensor) -> None:
    with hunt() as h:
        x[0:2].copy_(x[2:4])  # same storage, other offset: real work
    assert [c.noop for c in h.copies] == [False]


@pytest.mark.parametrize("ctx", ["normal", "inference_mode"])
def test_may_alias_ops_that_do_not_copy_record_nothing(x: torch.Tensor, ctx: str) -> None:
    cm = torch.inference_mode() if ctx == "inference_mode" else torch.enable_grad()
    with cm, hunt() as h:
        x.contiguous()
        x.to(torch.float32)
        x.reshape(-1)
        x.to("cpu")
    assert h.copies == ()


def workload(x: torch.Tensor, dst: torch.Tensor, idx: torch.Tensor) -> list[int]:
    """One of each copy; returns the lines it ran them on."""
    lines = []
    lines.append(here()); x.t().contiguous()  # fmt: skip
    lines.append(here()); x.to(torch.float64)  # fmt: skip
    lines.append(here()); x.t().reshape(-1)  # fmt: skip
    lines.append(here()); x.contiguous()  # fmt: skip
    lines.append(here()); torch.cat([x, x])  # fmt: skip
    lines.append(here()); torch.stack([x, x])  # fmt: skip
    lines.append(here()); dst[1:3] = x[1:3]  # fmt: skip
    lines.append(here()); dst[idx] = 1.0  # fmt: skip
    lines.append(here()); x.repeat(2, 1)  # fmt: skip
    lines.append(here()); F.pad(x, (1, 1))  # fmt: skip
    lines.append(here()); x.clone()  # fmt: skip
    return lines


def _run_workload(mode: str) -> list[tuple[str, str, int, int | None, bool]]:
    x = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    dst = torch.zeros(4, 6)
    idx = torch.tensor([0, 3])
    ctx = {"normal": torch.enable_grad(), "no_grad": torch.no_grad(), "inference_mode": torch.inference_mode()}[mode]
    with ctx, hunt() as h:
        workload(x, dst, idx)
    return [(c.op, c.kind, c.bytes, c.site.line if c.site else None, c.noop) for c in h.copies]


def test_inference_mode_and_no_grad_record_the_same_copies_as_normal_mode() -> None:
    normal = _run_workload("normal")
    # 11 lines, one of which (contiguous on a contiguous tensor) copies nothing
    assert len(normal) == 10
    assert [op for op, *_ in normal] == [
        "aten.clone.default",
        "aten._to_copy.default",
        "aten.clone.default",
        "aten.cat.default",
        "aten.stack.default",
        "aten.copy_.default",
        "aten.index_put_.default",
        "aten.repeat.default",
        "aten.constant_pad_nd.default",
        "aten.clone.default",
    ]
    assert _run_workload("no_grad") == normal
    assert _run_workload("inference_mode") == normal


def test_cross_device_kind_names() -> None:
    from copyhunt.capture.dispatch import copy_kind

    cpu, c0, c1 = torch.device("cpu"), torch.device("cuda:0"), torch.device("cuda:1")
    assert [copy_kind(cpu, cpu), copy_kind(cpu, c0), copy_kind(c0, cpu), copy_kind(c0, c1), copy_kind(c0, c0)] == [
        "d2d",
        "h2d",
        "d2h",
        "p2p",
        "d2d",
    ]


def test_registry_covers_the_issue_list() -> None:
    from copyhunt.capture.copy_ops import COPY_OPS

    names = {str(op) for op in COPY_OPS}
    for op in (
        "aten.copy_.default",
        "aten.clone.default",
        "aten._to_copy.default",
        "aten.cat.default",
        "aten.cat.out",
        "aten.stack.default",
        "aten.stack.out",
        "aten.index_put_.default",
        "aten.index_copy_.default",
        "aten.repeat.default",
        "aten.constant_pad_nd.default",
    ):
        assert op in names
