"""Hand-built records, copies and traces for tests: one set of builders instead of one per test file.

``record`` builds a ``CopyRecord`` (captured facts only); ``copy`` a read-side ``Copy`` (a record with
its device timing and findings); ``trace`` a ``Trace`` from either, putting timings and findings
beside the copies by position; ``with_copies`` swaps the copy records of a trace. Defaults: a d2d
``aten.copy_`` of 16 float32 bytes on the CPU.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

from copyhunt.records import Copy, CopyRecord, DeviceTiming, Finding, Frame, Trace, TraceMeta, Verification

MEMCPY = "Memcpy DtoD (Device -> Device)"


def frame(file: str = "/repo/m.py", line: int = 1, function: str = "f") -> Frame:
    """A source location."""
    return Frame(file, line, function)


def record(seq: int = 0, nbytes: int = 16, *, site: Frame | None = None, op: str = "aten.copy_.default", kind: str = "d2d",
           noop: bool = False, src_device: str = "cpu", dst_device: str = "cpu", shape: tuple[int, ...] | None = None,
           dtype: str = "torch.float32", **fields: Any) -> CopyRecord:
    """A copy record; ``shape`` defaults to ``nbytes`` float32 elements."""
    return CopyRecord(
        seq=seq, op=op, kind=kind, bytes=nbytes, noop=noop, src_device=src_device, dst_device=dst_device,
        shape=shape if shape is not None else (nbytes // 4,), dtype=dtype, site=site, **fields,
    )


def copy(seq: int = 0, nbytes: int = 16, *, verdict: str | None = None, reason: str = "", suggestion: str = "",
         findings: tuple[Finding, ...] | None = None, us: float | None = None, timing: DeviceTiming | None = None,
         event: str = MEMCPY, start_us: float | None = None, verification: Verification | None = None,
         **record_fields: Any) -> Copy:
    """A read-side copy: ``record(...)`` with a device timing (``us`` or ``timing``), findings (``verdict``...)
    and what copyhunt verify found (``verification``)."""
    if timing is None and us is not None:
        timing = DeviceTiming(event, us, nbytes, start_us=start_us)
    if findings is None:
        findings = (Finding(verdict, reason, suggestion),) if verdict is not None else ()
    return Copy(0, record(seq, nbytes, **record_fields), timing, findings, verification)


def trace(*copies: Copy | CopyRecord, meta: TraceMeta | None = None, judged: bool | None = None, **fields: Any) -> Trace:
    """A trace of these copies; judged when any copy has findings (or as ``judged`` says)."""
    read = [c if isinstance(c, Copy) else Copy(0, c) for c in copies]
    judged = any(c.findings for c in read) if judged is None else judged
    return Trace(
        meta=meta if meta is not None else TraceMeta(),
        copies=tuple(c.record for c in read),
        timings={i: c.device for i, c in enumerate(read) if c.device is not None},
        findings={i: c.findings for i, c in enumerate(read) if c.findings} if judged else None,
        verifications={i: c.verification for i, c in enumerate(read) if c.verification is not None},
        **fields,
    )


def with_copies(t: Trace, copies: Iterable[CopyRecord]) -> Trace:
    """``t`` with other copy records; timings and findings are dropped (they are keyed by position)."""
    return replace(t, copies=tuple(copies), timings={}, findings=None)
