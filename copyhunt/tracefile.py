"""The trace file, ``copyhunt.trace/3``: its field list, writer and reader, here and nowhere else.

Layout (docs/trace-format.md has every field)::

    {"schema": "copyhunt.trace/3",
     "meta": {...},                                   # TraceMeta
     "strings": ["aten.mul.Tensor", ...],             # op names, modules, regions, devices (by index)
     "frames": [[file, line, function], ...],          # source sites and stack frames (by index)
     "copies": [{"seq", "op", "kind", "bytes", ..., "stack": [frame, ...]}],  # CopyRecord
     "timings": [{"copy": 0, "name", "time_us", "bytes", "stream", "start_us"}, ...],
     "findings": null | [{"copy": 0, "verdict", "reason", "suggestion"}, ...],
     "verifications": [{"copy": 0, "status", "detail", "seq"}, ...],  # copyhunt verify
     "ops": {"n": N, "seq": [...], "op": [...], "reads": [[storage, offset, nbytes, dense, ...], ...], ...},
     "storages": {"n": M, "id": [...], "device": [...], "nbytes": [...], "alive_at_end": [...]}}

``ops`` and ``storages`` are columns (``copyhunt.tracecolumns``): a long hunt's file holds about
190 bytes per op instead of 550 in version 2, whose ``ops`` and ``storages`` were arrays of objects
and whose copies' stacks were arrays of frame objects. Version 2 and 1 files are still read.

``timings``, ``findings`` and ``verifications`` point at a copy by its position in ``copies``;
``findings`` is null until the verdict analysis ran, and lists each judged copy's findings strongest
first; ``verifications`` lists the copies whose site ``copyhunt verify`` re-ran (a file written
before it existed has no such key: nothing was re-run).

Version 1 files (copyhunt 0.1: device timing and verdicts inside each copy, first-party facts in
``extra`` maps, filters applied while capturing) are read into the same records. Keys a newer
copyhunt added are kept in the records' ``extra`` and written back where they were.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

from copyhunt.errors import TraceFormatError
from copyhunt.gc_pause import no_cyclic_gc
from copyhunt.tracecolumns import (
    Interned, frames_from_json, ops_from_columns, ops_to_columns, storages_from_columns, storages_to_columns,
)
from copyhunt.validation import check_trace, parse_json, read_text
from copyhunt.records import (
    Access,
    CompiledCopy,
    CompiledGraphRun,
    CompiledHunt,
    CopyRecord,
    DeviceTiming,
    Finding,
    Frame,
    OpRecord,
    StorageInfo,
    Trace,
    TraceMeta,
    Verification,
    VERIFICATION_STATUSES,
)

SCHEMA_NAME = "copyhunt.trace"
SCHEMA_VERSION = 3
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"

#: Keys every copy entry has: the minimum contract other tools rely on.
REQUIRED_COPY_KEYS = ("seq", "op", "kind", "bytes", "noop", "src_device", "dst_device", "shape", "dtype")

_COPY_FIELDS = tuple(f.name for f in fields(CopyRecord) if f.name != "extra")
_META_FIELDS = tuple(f.name for f in fields(TraceMeta) if f.name != "extra")
_OP_FIELDS = tuple(f.name for f in fields(OpRecord))
_TUPLE_META = ("argv", "focus", "hide", "notes", "children", "pending")


# --- writing ---------------------------------------------------------------------------------


def to_json(trace: Trace) -> dict[str, Any]:
    """The trace document (schema ``copyhunt.trace/3``)."""
    tables = Interned()
    copies = [_copy_to_json(c, tables) for c in trace.copies]
    ops = ops_to_columns(trace.ops, tables)
    storages = storages_to_columns(trace.storages, tables)
    return {
        "schema": SCHEMA,
        "meta": _meta_to_json(trace.meta),
        **tables.tables(),
        "copies": copies,
        "timings": [{"copy": i, **_timing_to_json(t)} for i, t in sorted(trace.timings.items())],
        "findings": None if trace.findings is None else [
            {"copy": i, "verdict": f.verdict, "reason": f.reason, "suggestion": f.suggestion}
            for i, found in sorted(trace.findings.items())
            for f in found
        ],
        "verifications": [{"copy": i, "status": v.status, "detail": v.detail, "seq": v.seq}
                          for i, v in sorted(trace.verifications.items())],
        "ops": ops,
        "storages": storages,
    }


def dumps(trace: Trace, indent: int | None = None) -> str:
    """The trace document as strict JSON text (a NaN or infinity is an error, never a bare ``NaN``)."""
    return json.dumps(to_json(trace), indent=indent, allow_nan=False)


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(trace: Trace, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``trace`` to ``path`` atomically; never replace an existing file unless ``overwrite``.

    The document goes to a temporary file in the same folder first (a crash never leaves half a
    trace), which is then hard-linked to the final name: creating a link fails when the name exists,
    so a file that appeared meanwhile (another run with the same ``-o``) is never replaced.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    with no_cyclic_gc():
        text = dumps(trace) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: follow the umask like any file the user writes
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if overwrite:
            os.replace(tmp, path)
            return path
        try:
            os.link(tmp, path)  # atomic and exclusive: FileExistsError if the name was taken meanwhile
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: exclusive creation, written in place
            _write_exclusive(path, text)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_exclusive(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _frame_to_json(f: Frame | None) -> dict[str, Any] | None:
    if f is None:
        return None
    d: dict[str, Any] = {"file": f.file, "line": f.line, "function": f.function}
    if f.source_text is not None:  # copy sites only
        d["source_text"] = f.source_text
    return d


def _timing_to_json(t: DeviceTiming) -> dict[str, Any]:
    return {"name": t.name, "time_us": t.time_us, "bytes": t.bytes, "stream": t.stream, "start_us": t.start_us}


def _copy_to_json(c: CopyRecord, tables: Interned) -> dict[str, Any]:
    d: dict[str, Any] = {name: getattr(c, name) for name in _COPY_FIELDS}
    d["shape"] = list(c.shape)
    d["site"] = _frame_to_json(c.site)  # an object: readers of --json look at it
    d["stack"] = [tables.frame(f) for f in c.stack]
    d["src_storages"] = list(c.src_storages)
    d["compiled"] = None if c.compiled is None else _plain(c.compiled)
    d["src_dtypes"] = list(c.src_dtypes)
    d["src_contiguity"] = list(c.src_contiguity)
    for k, v in c.extra.items():  # keys of a newer copyhunt go back where they were
        d.setdefault(k, v)
    return d


def _plain(obj: Any) -> Any:
    """A records dataclass (``CompiledCopy``, ``CompiledHunt``...) as JSON values: objects and arrays."""
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj


def _meta_to_json(m: TraceMeta) -> dict[str, Any]:
    d: dict[str, Any] = {name: getattr(m, name) for name in _META_FIELDS}
    for name in _TUPLE_META:
        d[name] = list(d[name])
    d["view"] = dict(m.view)
    d["device_join"] = None if m.device_join is None else dict(m.device_join)
    d["compiled"] = None if m.compiled is None else _plain(m.compiled)
    for k, v in m.extra.items():
        d.setdefault(k, v)
    return d


# --- reading ---------------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> Trace:
    """Read a trace file; TraceFormatError (one line) when missing, not a regular file, truncated, foreign,
    newer, or holding values no copy could have (``copyhunt.validation``)."""
    path = Path(path)
    text = read_text(path, "trace file")
    with no_cyclic_gc():
        doc = parse_json(text, str(path), "trace file")
        del text  # the document and the records need the memory more
        return from_json(doc, source=str(path))


def from_json(doc: Any, source: str = "trace") -> Trace:
    """Parse a trace document (version 1, 2 or 3); TraceFormatError with one clear line if it is not one."""
    if not isinstance(doc, dict) or "schema" not in doc:
        raise TraceFormatError(f"{source}: not a copyhunt trace (no 'schema' key)")
    schema = doc["schema"]
    name, _, version = str(schema).partition("/")
    if name != SCHEMA_NAME:
        raise TraceFormatError(f"{source}: not a copyhunt trace (schema {schema!r}, expected {SCHEMA!r})")
    if not (version.isascii() and version.isdigit()) or len(version) > 6:
        raise TraceFormatError(f"{source}: malformed schema version {schema!r}")
    if int(version) > SCHEMA_VERSION:
        raise TraceFormatError(
            f"{source}: written by a newer copyhunt (schema {schema!r}; this copyhunt reads up to {SCHEMA!r}); upgrade copyhunt"
        )
    try:
        # Records built from the document, then every value checked (one place for every file format).
        return check_trace(_from_v1(doc) if int(version) == 1 else _from_v2(doc, compact=int(version) >= 3))
    except TraceFormatError as exc:
        raise TraceFormatError(f"{source}: {exc}") from None
    except RecursionError:
        raise TraceFormatError(f"{source}: nested too deeply; not a copyhunt trace") from None
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        raise TraceFormatError(f"{source}: malformed trace record ({type(exc).__name__}: {exc})") from None


def _from_v2(doc: dict[str, Any], compact: bool = False) -> Trace:
    """A version 2 or 3 document (3: op and storage columns, string and frame tables)."""
    if compact:
        strings = doc.get("strings", [])
        if not isinstance(strings, list) or not all(isinstance(x, str) for x in strings):
            raise TraceFormatError("'strings' must be an array of strings")
        frames = frames_from_json(doc.get("frames", []))
        copies = tuple(_copy_from_json(c, frames) for c in doc.get("copies", []))
        ops = ops_from_columns(doc.get("ops", {"n": 0}), strings, frames)
        storages = storages_from_columns(doc.get("storages", {"n": 0}), strings)
    else:
        copies = tuple(_copy_from_json(c) for c in doc.get("copies", []))
        ops = tuple(_op_from_json(o) for o in doc.get("ops", []))
        storages = tuple(StorageInfo(**s) for s in doc.get("storages", []))
    timings: dict[int, DeviceTiming] = {}
    for raw in doc.get("timings", []):
        raw = dict(raw)
        i = _copy_index(raw.pop("copy"), len(copies))
        timings[i] = DeviceTiming(**raw)
    findings: dict[int, tuple[Finding, ...]] | None = None
    if doc.get("findings") is not None:
        found: dict[int, list[Finding]] = {}
        for raw in doc["findings"]:
            i = _copy_index(raw["copy"], len(copies))
            found.setdefault(i, []).append(Finding(str(raw["verdict"]), str(raw["reason"]), str(raw["suggestion"])))
        findings = {i: tuple(f) for i, f in found.items()}
    verifications: dict[int, Verification] = {}
    for raw in doc.get("verifications", []):
        i = _copy_index(raw["copy"], len(copies))
        v = Verification(str(raw["status"]), str(raw["detail"]), None if raw.get("seq") is None else int(raw["seq"]))
        if v.status not in VERIFICATION_STATUSES:
            raise TraceFormatError(f"unknown verification status {v.status!r} (valid: {', '.join(VERIFICATION_STATUSES)})")
        verifications[i] = v
    return Trace(
        meta=_meta_from_json(doc.get("meta", {})),
        copies=copies,
        ops=ops,
        storages=storages,
        timings=timings,
        findings=findings,
        verifications=verifications,
    )


def _array(raw: Any, what: str) -> list[Any]:
    """A JSON array as read (a string or number where a list belongs is an error, not its characters)."""
    if not isinstance(raw, list):
        raise TraceFormatError(f"{what} must be a list, got {type(raw).__name__}")
    return raw


def _copy_index(raw: Any, n: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise TraceFormatError(f"'copy' must be an integer, got {raw!r:.40}")
    i = raw
    if not 0 <= i < n:
        raise TraceFormatError(f"'copy' {raw!r} names no copy (the trace has {n})")
    return i


def _frame_from_json(raw: Any) -> Frame | None:
    if raw is None:
        return None
    # Values as written (no str()/int() coercion): copyhunt.validation checks their types.
    return Frame(file=raw["file"], line=raw["line"], function=raw["function"], source_text=raw.get("source_text"))


def _stack_frame(raw: Any, frames: list[Frame] | None) -> Frame | None:
    if frames is None:
        return _frame_from_json(raw)
    if not isinstance(raw, int) or not 0 <= raw < len(frames):
        raise TraceFormatError(f"stack frame {raw!r} is not in the frame table (it has {len(frames)})")
    return frames[raw]


def _copy_from_json(raw: Any, frames: list[Frame] | None = None) -> CopyRecord:
    if not isinstance(raw, dict):
        raise TraceFormatError(f"a copy record must be an object, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_COPY_KEYS if k not in raw]
    if missing:
        raise TraceFormatError(f"copy record is missing {', '.join(missing)}: {json.dumps(raw)[:120]}")
    kw = {k: v for k, v in raw.items() if k in _COPY_FIELDS}
    kw["shape"] = tuple(_array(raw["shape"], "shape"))
    kw["site"] = _frame_from_json(raw.get("site"))
    kw["stack"] = tuple(_stack_frame(f, frames) for f in _array(raw.get("stack", []), "stack"))
    kw["src_storages"] = tuple(_array(raw.get("src_storages", []), "src_storages"))
    kw["compiled"] = _compiled_copy_from_json(raw.get("compiled"))
    kw["src_dtypes"] = tuple(_array(raw.get("src_dtypes", []), "src_dtypes"))
    kw["src_contiguity"] = tuple(None if c is None else bool(c) for c in raw.get("src_contiguity", ()))
    kw["extra"] = {k: v for k, v in raw.items() if k not in _COPY_FIELDS}
    return CopyRecord(**kw)


def _compiled_copy_from_json(raw: Any) -> CompiledCopy | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TraceFormatError(f"a copy's 'compiled' must be an object or null, got {type(raw).__name__}")
    raw = dict(raw)
    raw["kernels"] = tuple(str(k) for k in raw.get("kernels") or ())
    raw["fused_with"] = tuple(str(n) for n in raw.get("fused_with") or ())
    return CompiledCopy(**raw)


def _compiled_hunt_from_json(raw: Any) -> CompiledHunt | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TraceFormatError(f"'meta.compiled' must be an object or null, got {type(raw).__name__}")
    raw = dict(raw)
    raw["graphs"] = tuple(
        CompiledGraphRun(**{**g, "copies": tuple(g.get("copies") or ()), "removed": tuple(g.get("removed") or ())})
        for g in raw.get("graphs") or ()
    )
    raw["ran_eagerly"] = tuple(raw.get("ran_eagerly") or ())
    return CompiledHunt(**raw)


def _access(raw: Any) -> Access:
    if not isinstance(raw, list) or len(raw) != 4:
        raise TraceFormatError(f"storage access must be [storage, offset, nbytes, dense], got {raw!r}")
    return Access(int(raw[0]), int(raw[1]), int(raw[2]), bool(raw[3]))


def _op_from_json(raw: dict[str, Any]) -> OpRecord:
    kw = {k: v for k, v in raw.items() if k in _OP_FIELDS}
    kw["reads"] = tuple(_access(a) for a in raw.get("reads", ()))
    kw["writes"] = tuple(_access(a) for a in raw.get("writes", ()))
    kw["allocs"] = tuple(int(s) for s in raw.get("allocs", ()))
    kw["frees"] = tuple(int(s) for s in raw.get("frees", ()))
    kw["site"] = _frame_from_json(raw.get("site"))
    return OpRecord(**kw)


def _meta_from_json(raw: Any) -> TraceMeta:
    if not isinstance(raw, dict):
        raise TraceFormatError(f"'meta' must be an object, got {type(raw).__name__}")
    kw = {k: v for k, v in raw.items() if k in _META_FIELDS}
    for name in _TUPLE_META:
        kw[name] = tuple(_array(raw.get(name, []), f"meta.{name}"))
    kw["view"] = dict(raw.get("view") or {})
    kw["compiled"] = _compiled_hunt_from_json(raw.get("compiled"))
    kw["extra"] = {k: v for k, v in raw.items() if k not in _META_FIELDS}
    return TraceMeta(**kw)


# --- version 1 (copyhunt 0.1) --------------------------------------------------------------------

#: Keys of a version-1 copy entry that moved: device timing and verdicts beside the copies, first-party
#: facts out of ``extra`` into real fields.
_V1_ANNOTATIONS = ("device", "verdict", "reason", "suggestion", "findings", "extra")


def _from_v1(doc: dict[str, Any]) -> Trace:
    raw_copies = doc.get("copies", [])
    copies: list[CopyRecord] = []
    timings: dict[int, DeviceTiming] = {}
    findings: dict[int, tuple[Finding, ...]] = {}
    for i, raw in enumerate(raw_copies):
        if not isinstance(raw, dict):
            raise TraceFormatError(f"a copy record must be an object, got {type(raw).__name__}")
        extra = dict(raw.get("extra") or {})
        entry = {k: v for k, v in raw.items() if k not in _V1_ANNOTATIONS}
        if "src_storages" in extra:
            entry["src_storages"] = extra.pop("src_storages")
        exact = bool(extra.pop("bytes_exact", True))
        known = bool(extra.pop("bytes_known", True))
        entry["bytes_exact"] = exact and known
        if "graph" in extra:
            entry["graph"] = extra.pop("graph")
        if "compiled" in extra:  # the torch.compile facts of the compile branch's version-1 files
            entry["compiled"] = extra.pop("compiled")
        entry.update({k: v for k, v in extra.items() if k not in entry})
        copies.append(_copy_from_json(entry))
        if raw.get("device") is not None:
            timings[i] = DeviceTiming(**raw["device"])
        found = tuple(Finding(**f) for f in raw.get("findings") or ())
        if not found and raw.get("verdict") is not None:
            found = (Finding(str(raw["verdict"]), str(raw.get("reason") or ""), str(raw.get("suggestion") or "")),)
        if found:
            findings[i] = found
    ops = tuple(_op_from_json(o) for o in doc.get("ops", []))
    return Trace(
        meta=_meta_from_v1(doc.get("meta", {}), bool(ops)),
        copies=tuple(copies),
        ops=ops,
        storages=tuple(StorageInfo(**s) for s in doc.get("storages", [])),
        timings=timings,
        findings=findings if findings else None,
    )


def _meta_from_v1(raw: Any, has_ops: bool) -> TraceMeta:
    if not isinstance(raw, dict):
        raise TraceFormatError(f"'meta' must be an object, got {type(raw).__name__}")
    raw = dict(raw)
    filters: Mapping[str, Any] = raw.pop("filters", None) or {}
    extra = {**dict(raw.pop("extra", None) or {}), **{k: v for k, v in raw.items() if k not in _META_FIELDS}}
    notes = tuple(raw.get("notes", ()))
    view = {k: filters[k] for k in ("kinds", "region") if filters.get(k)}
    if view:
        # Version 1 dropped the other copies while capturing: say so where every reader sees it.
        shown = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in view.items())
        notes += (f"traced by copyhunt 0.1 with filters ({shown}): the file holds no other copies",)
    return _meta_from_json({
        **{k: v for k, v in raw.items() if k in _META_FIELDS},
        "notes": list(notes),
        "focus": list(filters.get("focus") or ()),
        "hide": list(filters.get("hide") or ()),
        "view": view,
        # A hunt recorded every op unless record_ops=False said otherwise in a note.
        "ops_complete": has_ops and not any(n.startswith("copies only (record_ops=False)") for n in notes),
        "kineto_trace": extra.pop("kineto_trace", None),
        "device_join": extra.pop("device_join", None),
        "imported_from": extra.pop("imported_from", None),
        "compiled": extra.pop("compiled", None),
        **extra,
    })
