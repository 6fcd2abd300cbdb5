"""Readers for trace files: copyhunt's own, and foreign profiler output (Chrome trace, rocprofv3)."""

from __future__ import annotations

import csv
import gzip
import io
import os
import sqlite3
import zlib
from pathlib import Path

from copyhunt.errors import TraceFormatError
from copyhunt.records import Trace
from copyhunt.tracefile import from_json
from copyhunt.validation import MAX_FILE_BYTES, check_trace, parse_json, read_bytes


def load_any(path: str | os.PathLike[str]) -> Trace:
    """Load a copyhunt trace, or import a foreign profiler file into the same records.

    Recognised by content, not by name: a copyhunt trace (JSON with ``schema``), a Chrome trace
    from torch.profiler (``traceEvents``; ``.gz`` too), rocprofv3 JSON (``rocprofiler-sdk-tool``),
    a rocprofv3 memory-copy CSV, or a rocpd SQLite database.
    """
    p = Path(path)
    data = read_bytes(p, "trace file")  # a regular file of bounded size, refused at once otherwise
    try:
        return _import(p, data)  # from_json checks a copyhunt trace; the importers' records are checked below
    except TraceFormatError:
        raise
    except RecursionError:
        raise TraceFormatError(f"{p}: nested too deeply; not a trace file") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, csv.Error, sqlite3.Error, UnicodeError,
            OSError, EOFError, zlib.error) as exc:
        # A foreign file of the right shape but with values of the wrong type: one line, never a traceback.
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise TraceFormatError(f"{p}: malformed profiler file ({type(exc).__name__}: {first})") from None


def _import(p: Path, data: bytes) -> Trace:
    from copyhunt.importers import rocprof

    head = data[:64]
    if rocprof.looks_like_sqlite(head):
        return check_trace(rocprof.import_rocpd(p))
    if head[:2] == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=io.BytesIO(data)).read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise TraceFormatError(f"{p}: decompresses to more than {MAX_FILE_BYTES} bytes")
        data = raw
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{p}: not UTF-8 text (byte {exc.start}); not a trace file") from None
    if not text.lstrip().startswith(("{", "[")):
        if rocprof.looks_like_csv(text[:4096]):
            return check_trace(rocprof.import_csv(p))
    doc = parse_json(text, str(p), "trace file")
    if isinstance(doc, dict) and "schema" in doc:
        return from_json(doc, source=str(p))
    from copyhunt.importers import chrome

    if chrome.looks_like_chrome(doc):
        return check_trace(chrome.import_chrome(p, doc))
    if rocprof.looks_like_json(doc):
        return check_trace(rocprof.import_json(p, doc))
    raise TraceFormatError(
        f"{p}: not a copyhunt trace, torch.profiler Chrome trace or rocprofv3 output (JSON without 'schema', 'traceEvents' or 'rocprofiler-sdk-tool')"
    )
