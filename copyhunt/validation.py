"""Untrusted input, checked in one place: reading a file safely, and the values of records built from one.

Traces, budgets and foreign profiler files come from pull requests in CI: nobody vetted them. Every
reader goes through ``read_text`` (a regular file, size-limited, decoded) and ``parse_json`` (depth-limited,
no NaN, no 5,000-digit integers), and every record built from a document goes through ``check_trace``
(non-negative finite integers, known kinds / verdicts / origins, positive lines, the right types) so a
crafted value can never slip a copy past a budget. Each failure raises ``TraceFormatError`` (or the
error class the caller passes) with one line naming the bad value; the CLI turns it into exit 2.

The checks run on records, not on one JSON layout: any file format (``copyhunt.trace/2``, a compact
encoding, an importer) builds records and then calls ``check_trace``.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Iterable

from copyhunt.errors import CopyhuntError, TraceFormatError
from copyhunt.records import (
    COPY_KINDS,
    ORIGINS,
    VERDICTS,
    VERIFICATION_STATUSES,
    CopyRecord,
    Frame,
    Trace,
)

#: The largest file any reader accepts (a trace of millions of copies is well below it).
MAX_FILE_BYTES = int(os.environ.get("COPYHUNT_MAX_FILE_BYTES", str(2 << 30)))
#: The deepest nesting of JSON arrays/objects accepted (a trace nests about 6 deep).
MAX_DEPTH = 64


def read_bytes(path: str | os.PathLike[str], what: str = "file", error: type[CopyhuntError] = TraceFormatError,
               limit: int | None = None) -> bytes:
    """The bytes of a regular file, refused at once when missing, not a regular file (a FIFO,
    ``/dev/zero``, a directory) or larger than ``limit``; one line each."""
    limit = MAX_FILE_BYTES if limit is None else limit
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{path}: is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file (a device, FIFO or socket); give a {what}")
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size} bytes, larger than the {limit}-byte limit for a {what}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:  # it grew while being read
                raise error(f"{path}: larger than the {limit}-byte limit for a {what}")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], what: str = "file", error: type[CopyhuntError] = TraceFormatError,
              limit: int | None = None) -> str:
    """``read_bytes`` decoded as UTF-8 (a BOM allowed); one line when it is not UTF-8."""
    data = read_bytes(path, what, error, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); not a {what}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, source: str, what: str = "file", error: type[CopyhuntError] = TraceFormatError) -> Any:
    """Strict JSON (no NaN/Infinity); one line on failure, also for nesting deeper than the parser's
    recursion limit and integers of more than 4,300 digits (Python's limit). No hook runs per value: a
    trace of millions of numbers parses at the C parser's speed. Depth beyond the schema is checked
    where a document keeps unknown keys (``check_trace``); sizes of integers by the record checks."""
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON, truncated or corrupt (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise error(f"{source}: nested too deeply (more than {MAX_DEPTH} levels); not a {what}") from None
    except ValueError as exc:
        raise error(f"{source}: not a {what} ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    return doc


def check_depth(doc: Any, source: str, what: str = "file", error: type[CopyhuntError] = TraceFormatError,
                base: int = 0) -> None:
    """Refuse documents nested deeper than MAX_DEPTH (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(doc, 1 + base)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            raise error(f"{source}: nested too deeply (more than {MAX_DEPTH} levels); not a {what}")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


# --- values of records -------------------------------------------------------------------------


def _bad(what: str, value: Any, valid: str) -> TraceFormatError:
    shown = repr(value)
    return TraceFormatError(f"{what} must be {valid}, got {shown[:60]}{'...' if len(shown) > 60 else ''}")


#: The largest integer a count may be (a byte count of 2**63 is already 8 EiB).
MAX_COUNT = 2**63 - 1


def count(value: Any, what: str) -> int:
    """A non-negative integer below 2**63 (not a bool, not a float, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(what, value, "an integer >= 0")
    if value > MAX_COUNT:
        raise _bad(what, value, "below 2**63")
    return value


def _opt_count(value: Any, what: str) -> None:
    if value is not None:
        count(value, what)


def ident(value: Any, what: str) -> int:
    """A position or id: an integer >= -1 (-1: a device copy no op launched, an unknown graph)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise _bad(what, value, "an integer >= -1")
    return value


def _opt_ident(value: Any, what: str) -> None:
    if value is not None:
        ident(value, what)


def _opt_int(value: Any, what: str) -> None:
    """A thread or stream id: any integer (the OS and the profiler choose them)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _bad(what, value, "an integer or null")


def duration(value: Any, what: str) -> None:
    """A finite number >= 0 (device time, start time)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _bad(what, value, "a finite number >= 0")


def _opt_duration(value: Any, what: str) -> None:
    if value is not None:
        duration(value, what)


def _text(value: Any, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise _bad(what, value, "a string" + (" or null" if optional else ""))


def _flag(value: Any, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bool):
        raise _bad(what, value, "true or false")


def _one_of(value: Any, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise _bad(what, value, f"one of {', '.join(valid)}")


def check_frame(f: Frame | None, what: str) -> None:
    """A source location: file and function strings, a line >= 1 (0 for a frame without a line)."""
    if f is None:
        return
    _text(f.file, f"{what}.file")
    _text(f.function, f"{what}.function")
    if isinstance(f.line, bool) or not isinstance(f.line, int) or f.line < 0:
        raise _bad(f"{what}.line", f.line, "a line number >= 1")
    _text(getattr(f, "source_text", None), f"{what}.source_text", optional=True)


def check_copy(c: CopyRecord, i: int) -> None:
    """One copy record's values (``copies[i]``)."""
    w = f"copies[{i}]"
    ident(c.seq, f"{w}.seq")
    _text(c.op, f"{w}.op")
    _one_of(c.kind, COPY_KINDS, f"{w}.kind")
    count(c.bytes, f"{w}.bytes")
    _flag(c.noop, f"{w}.noop")
    _text(c.src_device, f"{w}.src_device")
    _text(c.dst_device, f"{w}.dst_device")
    for n, d in enumerate(c.shape):
        count(d, f"{w}.shape[{n}]")
    _text(c.dtype, f"{w}.dtype")
    check_frame(c.site, f"{w}.site")
    for n, f in enumerate(c.stack):
        check_frame(f, f"{w}.stack[{n}]")
    for name in ("module", "region", "src_dtype"):
        _text(getattr(c, name), f"{w}.{name}", optional=True)
    for name in ("captured_in_graph", "bytes_exact"):
        _flag(getattr(c, name), f"{w}.{name}")
    for name in ("src_contiguous", "dst_contiguous"):
        _flag(getattr(c, name), f"{w}.{name}", optional=True)
    _opt_int(c.thread, f"{w}.thread")
    for name in ("src_storage", "dst_storage", "graph_replay", "graph"):
        _opt_ident(getattr(c, name), f"{w}.{name}")
    for n, s in enumerate(c.src_storages):
        ident(s, f"{w}.src_storages[{n}]")
    for n, d in enumerate(c.src_dtypes):
        _text(d, f"{w}.src_dtypes[{n}]")
    _one_of(c.origin, ORIGINS, f"{w}.origin")


def check_trace(trace: Trace) -> Trace:
    """Every value a reader or a budget relies on; returns the trace unchanged when all are valid."""
    for i, c in enumerate(trace.copies):
        check_copy(c, i)
        if c.extra:  # keys of a newer copyhunt, kept as read: bounded depth (they are written back)
            check_depth(dict(c.extra), f"copies[{i}]", "trace file", TraceFormatError, base=1)
    for i, t in trace.timings.items():
        w = f"timings[copy {i}]"
        _text(t.name, f"{w}.name")
        duration(t.time_us, f"{w}.time_us")
        _opt_count(t.bytes, f"{w}.bytes")
        _opt_int(t.stream, f"{w}.stream")
        # A start time is a clock reading (it can be negative relative to the profiler's origin), never NaN.
        if t.start_us is not None and (isinstance(t.start_us, bool) or not isinstance(t.start_us, (int, float))
                                       or not math.isfinite(t.start_us)):
            raise _bad(f"{w}.start_us", t.start_us, "a finite number")
    for i, found in (trace.findings or {}).items():
        for f in found:
            _one_of(f.verdict, VERDICTS, f"findings[copy {i}].verdict")
            _text(f.reason, f"findings[copy {i}].reason")
            _text(f.suggestion, f"findings[copy {i}].suggestion")
    for i, v in trace.verifications.items():
        _one_of(v.status, VERIFICATION_STATUSES, f"verifications[copy {i}].status")
        _opt_ident(v.seq, f"verifications[copy {i}].seq")
    for n, o in enumerate(trace.ops):  # the bulk of a trace: a fast path, the named checks only on failure
        if not (type(o.seq) is int and o.seq >= -1 and type(o.op) is str
                and all(type(a.storage) is int and a.storage >= -1 and type(a.offset) is int and a.offset >= 0
                        and type(a.nbytes) is int and 0 <= a.nbytes <= MAX_COUNT for acc in (o.reads, o.writes) for a in acc)):
            ident(o.seq, f"ops[{n}].seq")
            _text(o.op, f"ops[{n}].op")
            for a in (*o.reads, *o.writes):
                ident(a.storage, f"ops[{n}] access storage")
                count(a.offset, f"ops[{n}] access offset")
                count(a.nbytes, f"ops[{n}] access nbytes")
    for n, s in enumerate(trace.storages):
        ident(s.id, f"storages[{n}].id")
        count(s.nbytes, f"storages[{n}].nbytes")
        _text(s.device, f"storages[{n}].device")
    m = trace.meta
    for name in ("copyhunt_version", "torch_version", "python", "device"):
        _text(getattr(m, name), f"meta.{name}")
    for name in ("target", "started_at", "error", "kineto_trace", "imported_from"):
        _text(getattr(m, name), f"meta.{name}", optional=True)
    check_depth({"extra": dict(m.extra), "view": dict(m.view), "device_join": m.device_join}, "meta", "trace file",
                TraceFormatError, base=1)
    _flag(m.complete, "meta.complete")
    _flag(m.ops_complete, "meta.ops_complete")
    _opt_duration(m.duration_s, "meta.duration_s")
    _opt_duration(m.gpu_time_us, "meta.gpu_time_us")
    for name in ("argv", "focus", "hide", "notes"):
        for n, a in enumerate(getattr(m, name)):
            _text(a, f"meta.{name}[{n}]")
    return trace


# --- source lines ------------------------------------------------------------------------------

#: The largest source file whose line is read (a generated module of megabytes is not worth it).
MAX_SOURCE_BYTES = 4 << 20
#: The longest source text kept for a site.
MAX_SOURCE_TEXT = 500


def source_line(file: str, line: int, root: str | os.PathLike[str] | None = None) -> str | None:
    """The stripped text of ``file:line``, or None. Only a regular file of at most MAX_SOURCE_BYTES is
    read (never a device, FIFO or /proc file), and with ``root`` only one below that folder (a trace
    from elsewhere must not make copyhunt print the machine's files)."""
    import linecache

    if not isinstance(line, int) or line <= 0 or not file or file.startswith("<"):
        return None
    path = os.path.abspath(file)
    if root is not None:
        base = os.path.realpath(os.fspath(root))
        real = os.path.realpath(path)
        if os.path.commonpath([base, real]) != base:
            return None
        path = real
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SOURCE_BYTES:
        return None
    linecache.checkcache(path)  # the file may have changed since it was cached
    text = linecache.getline(path, line).strip()
    return text[:MAX_SOURCE_TEXT] or None
