"""Readers for trace files: copyhunt's own, and foreign profiler output (Chrome trace, rocprofv3)."""

from __future__ import annotations

import os
from pathlib import Path

from copyhunt.errors import TraceFormatError
from copyhunt.records import Trace
from copyhunt.tracefile import from_json, load


def load_any(path: str | os.PathLike[str]) -> Trace:
    """Load a copyhunt trace, or import a foreign profiler file into the same records.

    Recognised by content, not by name: a copyhunt trace (JSON with ``schema``), a Chrome trace
    from torch.profiler (``traceEvents``; ``.gz`` too), rocprofv3 JSON (``rocprofiler-sdk-tool``),
    a rocprofv3 memory-copy CSV, or a rocpd SQLite database.
    """
    p = Path(path)
    if not p.exists():
        raise TraceFormatError(f"{p}: no such file")
    if p.is_dir():
        raise TraceFormatError(f"{p}: is a directory, not a trace file")
    try:
        with p.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise TraceFormatError(f"{p}: cannot read ({exc})") from None
    from copyhunt.importers import rocprof

    if rocprof.looks_like_sqlite(head):
        return rocprof.import_rocpd(p)
    gz = head[:2] == b"\x1f\x8b"
    text_head = "" if gz else head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not gz and not text_head.lstrip().startswith(("{", "[")):
        if rocprof.looks_like_csv(p.read_text(encoding="utf-8", errors="replace")[:4096]):
            return rocprof.import_csv(p)
        return load(p)  # gives the usual one-line "not valid JSON" error
    if not gz and '"schema"' in p.read_text(encoding="utf-8", errors="replace")[:256]:
        return load(p)
    from copyhunt.kineto import read_json
    from copyhunt.importers import chrome

    doc = read_json(p)
    if isinstance(doc, dict) and "schema" in doc:
        return from_json(doc, source=str(p))
    if chrome.looks_like_chrome(doc):
        return chrome.import_chrome(p, doc)
    if rocprof.looks_like_json(doc):
        return rocprof.import_json(p, doc)
    raise TraceFormatError(
        f"{p}: not a copyhunt trace, torch.profiler Chrome trace or rocprofv3 output (JSON without 'schema', 'traceEvents' or 'rocprofiler-sdk-tool')"
    )
