"""Import rocprofv3 (rocprofiler-sdk) memory-copy traces: CSV, JSON and the rocpd SQLite database.

Formats, as documented by ROCm/rocprofiler-sdk (``rocprofv3 --memory-copy-trace [--kernel-trace]
[--marker-trace] -f csv|json|rocpd``):

- CSV ``*_memory_copy_trace.csv``: ``Kind, Direction, Stream_Id, Source_Agent_Id,
  Destination_Agent_Id, Correlation_Id, Start_Timestamp, End_Timestamp`` (ns; no byte count; older
  files lack ``Stream_Id``). ``Direction`` is ``HOST_TO_DEVICE``, ``DEVICE_TO_HOST``,
  ``DEVICE_TO_DEVICE`` or ``HOST_TO_HOST``.
- JSON: ``{"rocprofiler-sdk-tool": [{"buffer_records": {"memory_copy": [...]}, "strings":
  {"buffer_records": [{"kind": "MEMORY_COPY", "operations": [...]}]}, "agents": [...]}]}``; each
  record has ``operation`` (an index into those names, or the name), ``start_timestamp``,
  ``end_timestamp``, ``bytes``, ``correlation_id{internal,external}``, ``thread_id``,
  ``src_agent_id{handle}``, ``dst_agent_id{handle}``.
- rocpd (SQLite, the default output since ROCm 7): view ``memory_copies`` with ``name,
  region_name, start, end, duration, size, dst_device, src_device, stream_id, stream_name,
  correlation_id, ...``; view ``kernels`` for blit copy kernels (``__amd_rocclr_copyBuffer``).

rocprofv3 records no Python stacks: sites are unknown, and the region is the ROCTx range the copy
ran in (``copyhunt.region`` and ``torch.cuda.nvtx.range_push`` become ROCTx ranges on ROCm builds).
The fixtures in ``traces/rocprof-synthetic/`` follow these columns but were NOT captured on AMD
hardware (none was available): see docs/device.md.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from copyhunt.errors import TraceFormatError
from copyhunt.records import CopyRecord, DeviceTiming, Trace, TraceMeta

_DIRECTIONS = {
    "HOST_TO_DEVICE": "h2d",
    "DEVICE_TO_HOST": "d2h",
    "DEVICE_TO_DEVICE": "d2d",
    "HOST_TO_HOST": "d2d",
    "PEER_TO_PEER": "p2p",  # rocpd's direction strings include MEMORY_COPY_PEER_TO_PEER
}
#: rocprofiler_memory_copy_operation_t: NONE=0, HOST_TO_HOST, HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE.
_OP_ENUM = {1: "HOST_TO_HOST", 2: "HOST_TO_DEVICE", 3: "DEVICE_TO_HOST", 4: "DEVICE_TO_DEVICE"}
_COPY_KERNELS = ("__amd_rocclr_copyBuffer", "__amd_rocclr_copyBufferAligned", "__amd_rocclr_copyBufferRect")
_CSV_COLUMNS = ("Direction", "Start_Timestamp", "End_Timestamp")
_NOTE_NO_STACKS = "rocprofv3 records no Python stacks: sites are unknown; `--by region` groups the copies by ROCTx region"
_NOTE_NO_VERDICTS = "imported from a profiler file: no op or storage records, so verdicts cannot be judged; run `copyhunt trace` for them"


def _direction(direction: str) -> str:
    """``HOST_TO_DEVICE`` from any spelling rocprofv3 writes: ``MEMORY_COPY_HOST_TO_DEVICE`` (the CSV and
    rocpd), ``ROCPROFILER_MEMORY_COPY_HOST_TO_DEVICE`` (the SDK's enum names) or the bare direction."""
    d = direction.strip().upper()
    for prefix in ("ROCPROFILER_", "BUFFER_TRACING_", "MEMORY_COPY_"):
        d = d.removeprefix(prefix)
    return d


def _op_name(direction: str) -> str:
    """The op copyhunt shows: ``MEMORY_COPY_HOST_TO_DEVICE``, never with the prefix doubled."""
    return f"MEMORY_COPY_{_direction(direction)}"


def _kind(direction: str) -> str:
    d = _direction(direction)
    if d not in _DIRECTIONS:
        raise TraceFormatError(f"unknown memory-copy direction {direction!r} (expected one of {', '.join(_DIRECTIONS)})")
    return _DIRECTIONS[d]


def _devices(kind: str) -> tuple[str, str]:
    return {"h2d": ("cpu", "gpu"), "d2h": ("gpu", "cpu")}.get(kind, ("gpu", "gpu"))


#: One imported copy: its record and its device timing (every rocprofv3 copy has one).
_Imported = tuple[CopyRecord, DeviceTiming]


def _record(
    seq: int, kind: str, name: str, start_ns: float, end_ns: float, nbytes: int | None,
    region: str | None = None, stream: int | None = None, thread: int | None = None,
) -> _Imported:
    src, dst = _devices(kind)
    record = CopyRecord(
        seq=seq, op=name, kind=kind, bytes=nbytes or 0, noop=False, src_device=src, dst_device=dst,
        shape=(), dtype="", site=None, region=region or None, thread=thread, origin="imported",
        bytes_exact=nbytes is not None,
    )
    timing = DeviceTiming(name=name, time_us=round((end_ns - start_ns) / 1e3, 3), bytes=nbytes, stream=stream, start_us=start_ns / 1e3)
    return record, timing


def _trace(copies: list[_Imported], fmt: str, source: str, notes: Iterable[str], gpu_time_us: float | None = None) -> Trace:
    copies.sort(key=lambda rt: rt[1].start_us if rt[1].start_us is not None else 0.0)
    meta = TraceMeta(
        device="rocm", target=Path(source).name, gpu_time_us=gpu_time_us,
        notes=(*notes, _NOTE_NO_STACKS, _NOTE_NO_VERDICTS), imported_from=f"rocprofv3-{fmt}",
    )
    return Trace(
        meta=meta,
        copies=tuple(replace(r, seq=i) for i, (r, _) in enumerate(copies)),
        timings={i: t for i, (_, t) in enumerate(copies)},
    )


# --- CSV ---------------------------------------------------------------------------------


def looks_like_csv(head: str) -> bool:
    """True when the first line is a rocprofv3 memory-copy CSV header."""
    first = head.splitlines()[0] if head else ""
    return all(col in first for col in _CSV_COLUMNS)


def import_csv(path: str | Path) -> Trace:
    """Read ``*_memory_copy_trace.csv``."""
    copies: list[_Imported] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceFormatError(f"{path}: not a rocprofv3 memory-copy CSV (missing {', '.join(missing)})")
        for i, row in enumerate(reader, start=2):
            try:
                kind = _kind(row["Direction"])
                start, end = float(row["Start_Timestamp"]), float(row["End_Timestamp"])
                # Newer rocprofv3 versions may add a byte count; the documented columns have none.
                raw_bytes = row.get("Bytes") or row.get("Size") or row.get("Memory_Copy_Bytes")
                stream = row.get("Stream_Id")
                copies.append(
                    _record(0, kind, _op_name(row["Direction"]), start, end,
                            int(raw_bytes) if raw_bytes else None, stream=int(stream) if stream else None)
                )
            except (TypeError, ValueError, KeyError, TraceFormatError) as exc:
                raise TraceFormatError(f"{path}:{i}: malformed memory-copy row ({exc})") from None
    notes = ["the memory-copy CSV has no byte counts: bytes are shown as 0 (use -f rocpd or json for sizes)"]
    notes.append("the CSV holds no ROCTx regions for copies (use -f rocpd with --marker-trace for region names)")
    return _trace(copies, "csv", str(path), notes)


# --- JSON --------------------------------------------------------------------------------


def looks_like_json(doc: Any) -> bool:
    """True for a rocprofv3 JSON document."""
    return isinstance(doc, dict) and "rocprofiler-sdk-tool" in doc


def import_json(path: str | Path, doc: Any) -> Trace:
    """Read rocprofv3 ``-f json`` output."""
    tools = doc["rocprofiler-sdk-tool"]
    tools = tools if isinstance(tools, list) else [tools]
    copies: list[_Imported] = []
    for tool in tools:
        # Containers of the wrong type are an error, not "no copies": a gate must not pass an empty import.
        for key, kind in (("buffer_records", dict), ("agents", list), ("strings", dict)):
            if not isinstance(tool, dict) or not isinstance(tool.get(key, kind()), kind):
                raise TraceFormatError(f"{path}: malformed rocprofv3 JSON ('{key}' must be a{'n object' if kind is dict else ' list'})")
        records = tool.get("buffer_records", {}).get("memory_copy", [])
        if not isinstance(records, list):
            raise TraceFormatError(f"{path}: malformed rocprofv3 JSON ('memory_copy' must be a list)")
        names: list[str] = []
        for entry in (tool.get("strings") or {}).get("buffer_records") or []:
            if isinstance(entry, dict) and entry.get("kind") == "MEMORY_COPY":
                names = list(entry.get("operations") or [])
        for r in records:
            try:
                op = r["operation"]
                if isinstance(op, int):
                    direction = names[op] if op < len(names) else _OP_ENUM.get(op, "")
                else:
                    direction = str(op)
                kind = _kind(direction)
                nbytes = r.get("bytes", r.get("size_bytes"))
                copies.append(
                    _record(0, kind, _op_name(direction),
                            float(r["start_timestamp"]), float(r["end_timestamp"]),
                            int(nbytes) if nbytes is not None else None, thread=r.get("thread_id"))
                )
            except (TypeError, ValueError, KeyError, IndexError, TraceFormatError) as exc:
                raise TraceFormatError(f"{path}: malformed memory_copy record ({type(exc).__name__}: {exc})") from None
    notes = ["the JSON importer does not resolve ROCTx regions (use -f rocpd for region names)"]
    if not copies:
        notes.insert(0, "the file holds no memory_copy records (was rocprofv3 run with --memory-copy-trace?)")
    return _trace(copies, "json", str(path), notes)


# --- rocpd (SQLite) ----------------------------------------------------------------------


def looks_like_sqlite(head: bytes) -> bool:
    """True for an SQLite database file."""
    return head.startswith(b"SQLite format 3\x00")


def _columns(con: sqlite3.Connection, view: str) -> set[str]:
    try:
        cur = con.execute(f"SELECT * FROM `{view}` LIMIT 0")
    except sqlite3.Error:
        return set()
    return {d[0] for d in cur.description}


def import_rocpd(path: str | Path) -> Trace:
    """Read a rocpd database: the ``memory_copies`` view, plus blit copy kernels from ``kernels``."""
    try:
        con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise TraceFormatError(f"{path}: cannot open SQLite database ({exc})") from None
    try:
        cols = _columns(con, "memory_copies")
        if not cols:
            raise TraceFormatError(f"{path}: an SQLite file without a rocpd 'memory_copies' view (not a rocprofv3 rocpd database)")
        want = [c for c in ("name", "region_name", "start", "end", "size", "stream_id", "tid") if c in cols]
        copies: list[_Imported] = []
        for row in con.execute(f"SELECT {', '.join(want)} FROM memory_copies"):
            r = dict(zip(want, row))
            name = str(r.get("name") or "")
            copies.append(
                _record(0, _kind(name), _op_name(name), float(r["start"]), float(r["end"]),
                        int(r["size"]) if r.get("size") is not None else None,
                        region=r.get("region_name"), stream=r.get("stream_id"), thread=r.get("tid"))
            )
        kcols = _columns(con, "kernels")
        n_kernels = 0
        gpu_time_ns = sum(t.time_us * 1e3 for _, t in copies)
        if kcols:
            kname = "kernel_name" if "kernel_name" in kcols else "name"
            kwant = [c for c in (kname, "region_name", "start", "end", "stream_id", "tid") if c in kcols]
            for row in con.execute(f"SELECT {', '.join(kwant)} FROM kernels"):
                r = dict(zip(kwant, row))
                gpu_time_ns += float(r["end"]) - float(r["start"])
                if any(k in str(r[kname]) for k in _COPY_KERNELS):
                    n_kernels += 1
                    copies.append(
                        _record(0, "d2d", str(r[kname]), float(r["start"]), float(r["end"]), None,
                                region=r.get("region_name"), stream=r.get("stream_id"), thread=r.get("tid"))
                    )
    except sqlite3.Error as exc:
        raise TraceFormatError(f"{path}: unreadable rocpd database ({exc})") from None
    finally:
        con.close()
    notes = []
    if not kcols:
        notes.append("the database has no kernel trace (run rocprofv3 with --kernel-trace): blit copy kernels and GPU share are missing")
    if n_kernels:
        notes.append(f"{n_kernels} blit copy kernel(s) (__amd_rocclr_copyBuffer) have no byte count: counted as 0 bytes")
    return _trace(copies, "rocpd", str(path), notes, gpu_time_us=round(gpu_time_ns / 1e3, 3) if kcols else None)
