"""The trace data model: plain frozen records and the versioned JSON trace file.

Everything else in copyhunt produces or consumes these records. This module imports
only the standard library so that a saved trace can be loaded (and tested) anywhere.

Schema ``copyhunt.trace/1`` (minimum contract; fields are only ever added, never renamed)::

    {"schema": "copyhunt.trace/1",
     "meta": {...},
     "copies": [{"seq", "op", "kind", "bytes", "noop", "src_device", "dst_device", "shape",
                 "dtype", "site": {"file", "line", "function"}, "module", "region",
                 "captured_in_graph", "verdict", "verification", ...}, ...],
     "ops": [...], "storages": [...]}
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from copyhunt.errors import TraceFormatError

SCHEMA_NAME = "copyhunt.trace"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"

#: Copy kinds. ``d2d`` means source and destination on the same device (the CPU included).
COPY_KINDS = ("d2d", "h2d", "d2h", "p2p")

#: Copy verdicts, strongest first. Every verdict but "needed" means "looks eliminable".
VERDICTS = (
    "noop",  # same storage and layout: PyTorch does no work; drop the call
    "dead-store",  # destination overwritten or freed before anything reads it
    "fresh-temporary",  # source made just before and never read again: write into the destination
    "round-trip",  # copied A -> B and back unchanged
    "chained",  # a copy of a copy with nothing in between: one op would do
    "defensive-clone",  # neither side written while the copy lives: an alias would do
    "needed",
)


def is_eliminable(verdict: str | None) -> bool:
    """True for every verdict that says the copy could go."""
    return verdict is not None and verdict != "needed"


#: Where a copy record came from.
ORIGINS = (
    "dispatch",  # seen by the TorchDispatchMode (the normal case)
    "device",  # a device copy no dispatch record explains (C++/library code)
    "graph-replay",  # executed by a CUDA graph replay, attributed to its capture-time record
    "imported",  # read from a foreign profiler file (Chrome trace, rocprofv3)
)


@dataclass(frozen=True)
class Frame:
    """One Python source location: where a copy (or op) was issued."""

    file: str
    line: int
    function: str

    def short(self) -> str:
        """``path:line function``, the form shown in tables."""
        return f"{self.file}:{self.line} {self.function}"


@dataclass(frozen=True)
class DeviceTiming:
    """What the GPU profiler saw for one copy: event name, device time and bytes."""

    name: str
    time_us: float
    bytes: int | None = None
    stream: int | None = None
    start_us: float | None = None

    @property
    def bandwidth_gbps(self) -> float | None:
        """Achieved bandwidth in GB/s (bytes written / device time), if both are known."""
        if not self.bytes or self.time_us <= 0:
            return None
        return self.bytes / (self.time_us * 1e3)


@dataclass(frozen=True)
class Finding:
    """One verdict rule's opinion of a copy."""

    verdict: str
    reason: str
    suggestion: str


#: What re-running the program with a copy's site elided showed (``copyhunt verify``), on that input.
VERIFICATION_STATUSES = (
    "verified",  # the program's observable results were bit-identical with the copy elided
    "refuted",  # they differed (or the program raised): the suggestion changes results or cannot be written
    "not-testable",  # the re-run could not elide it faithfully, or the program is not deterministic
)


@dataclass(frozen=True)
class Verification:
    """The proof (or disproof) of a copy's verdict by re-execution: status, one-line detail, and the
    first op whose outputs differed from the untouched run, when one did."""

    status: str  # one of VERIFICATION_STATUSES
    detail: str
    seq: int | None = None


@dataclass(frozen=True)
class Access:
    """A byte range of one storage read or written by an op.

    ``dense`` is True when the op touches every byte of the range (a contiguous tensor);
    a strided view touches only some bytes between ``offset`` and ``offset + nbytes``.
    """

    storage: int
    offset: int
    nbytes: int
    dense: bool = True

    def to_json(self) -> list[Any]:
        return [self.storage, self.offset, self.nbytes, self.dense]

    @classmethod
    def from_json(cls, raw: Any) -> "Access":
        if not isinstance(raw, list) or len(raw) != 4:
            raise TraceFormatError(f"storage access must be [storage, offset, nbytes, dense], got {raw!r}")
        return cls(int(raw[0]), int(raw[1]), int(raw[2]), bool(raw[3]))


@dataclass(frozen=True)
class CopyRecord:
    """One executed copy of tensor data."""

    seq: int  # position in the op stream of the hunt (shared numbering with OpRecord.seq)
    op: str  # aten overload, e.g. "aten.copy_.default"
    kind: str  # one of COPY_KINDS
    bytes: int  # bytes written to the destination
    noop: bool  # same storage and layout: PyTorch does no work
    src_device: str
    dst_device: str
    shape: tuple[int, ...]  # destination shape
    dtype: str  # destination dtype, e.g. "torch.bfloat16"
    site: Frame | None  # the user's source line (attribution)
    module: str | None = None  # nn.Module path, e.g. "model.layers.3.moe"
    region: str | None = None  # copyhunt.region path, e.g. "decode/moe"
    captured_in_graph: bool = False
    src_dtype: str | None = None
    src_contiguous: bool | None = None
    dst_contiguous: bool | None = None
    stack: tuple[Frame, ...] = ()  # short stack, innermost first
    thread: int | None = None
    src_storage: int | None = None  # storage ids, join with OpRecord accesses
    dst_storage: int | None = None
    origin: str = "dispatch"  # one of ORIGINS
    graph_replay: int | None = None  # replay index for origin == "graph-replay"
    device: DeviceTiming | None = None  # joined GPU profiler event
    verdict: str | None = None  # strongest finding (analysis)
    reason: str | None = None
    suggestion: str | None = None
    findings: tuple[Finding, ...] = ()
    verification: Verification | None = None  # copyhunt verify's result for this copy's site; None: not tested
    extra: Mapping[str, Any] = field(default_factory=dict)  # room for additions


@dataclass(frozen=True)
class OpRecord:
    """Every op seen during a hunt, copies included: what it read, wrote and allocated."""

    seq: int
    op: str
    reads: tuple[Access, ...] = ()
    writes: tuple[Access, ...] = ()
    allocs: tuple[int, ...] = ()  # storages this op created (fresh outputs)
    frees: tuple[int, ...] = ()  # storages found dead just before this op ran
    site: Frame | None = None
    module: str | None = None
    region: str | None = None
    thread: int | None = None
    is_copy: bool = False
    captured_in_graph: bool = False


@dataclass(frozen=True)
class StorageInfo:
    """A storage seen during the hunt (ids are small integers local to one trace)."""

    id: int
    device: str
    nbytes: int
    alive_at_end: bool  # still referenced when the hunt ended (may be read later)


@dataclass(frozen=True)
class TraceMeta:
    """Facts about the run that produced a trace."""

    copyhunt_version: str = ""
    torch_version: str = ""
    python: str = ""
    device: str = "cpu"  # what ran it, e.g. "cuda:0 NVIDIA H100 80GB HBM3" or "cpu"
    target: str | None = None
    argv: tuple[str, ...] = ()
    started_at: str | None = None  # ISO 8601
    duration_s: float | None = None
    complete: bool = True  # False when the target raised or was interrupted
    error: str | None = None  # one line: why the trace is incomplete
    gpu_time_us: float | None = None  # all GPU time in the traced region (device capture), for shares
    filters: Mapping[str, Any] = field(default_factory=dict)  # region / kind filters applied
    notes: tuple[str, ...] = ()  # plain statements for the reader (what a file lacks, fallbacks...)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trace:
    """A whole trace: metadata, copies, and the per-op storage accesses."""

    meta: TraceMeta = field(default_factory=TraceMeta)
    copies: tuple[CopyRecord, ...] = ()
    ops: tuple[OpRecord, ...] = ()
    storages: tuple[StorageInfo, ...] = ()

    @property
    def total_bytes(self) -> int:
        """Bytes written by all copies that did real work."""
        return sum(c.bytes for c in self.copies if not c.noop)

    def with_copies(self, copies: Iterable[CopyRecord]) -> "Trace":
        """A copy of this trace with other copy records (records are immutable)."""
        return replace(self, copies=tuple(copies))

    def to_json(self) -> dict[str, Any]:
        """The trace document (schema ``copyhunt.trace/1``)."""
        return {
            "schema": SCHEMA,
            "meta": _meta_to_json(self.meta),
            "copies": [_copy_to_json(c) for c in self.copies],
            "ops": [_op_to_json(o) for o in self.ops],
            "storages": [_plain(s) for s in self.storages],
        }

    @classmethod
    def from_json(cls, doc: Any, source: str = "trace") -> "Trace":
        """Parse a trace document; raise TraceFormatError with one clear line if it is not one."""
        if not isinstance(doc, dict) or "schema" not in doc:
            raise TraceFormatError(f"{source}: not a copyhunt trace (no 'schema' key)")
        schema = doc["schema"]
        name, _, version = str(schema).partition("/")
        if name != SCHEMA_NAME:
            raise TraceFormatError(f"{source}: not a copyhunt trace (schema {schema!r}, expected {SCHEMA!r})")
        if not version.isdigit():
            raise TraceFormatError(f"{source}: malformed schema version {schema!r}")
        if int(version) > SCHEMA_VERSION:
            raise TraceFormatError(
                f"{source}: written by a newer copyhunt (schema {schema!r}; this copyhunt reads up to {SCHEMA!r}); upgrade copyhunt"
            )
        try:
            return cls(
                meta=_meta_from_json(doc.get("meta", {})),
                copies=tuple(_copy_from_json(c) for c in doc.get("copies", [])),
                ops=tuple(_op_from_json(o) for o in doc.get("ops", [])),
                storages=tuple(StorageInfo(**s) for s in doc.get("storages", [])),
            )
        except TraceFormatError:
            raise
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise TraceFormatError(f"{source}: malformed trace record ({type(exc).__name__}: {exc})") from None


# --- save / load -------------------------------------------------------------------------


def dumps(trace: Trace, indent: int | None = None) -> str:
    """The trace document as JSON text."""
    return json.dumps(trace.to_json(), indent=indent)


def save(trace: Trace, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``trace`` to ``path`` atomically; refuse to replace an existing file unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file in the same folder and rename: a crash never leaves half a trace.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(trace))
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike[str]) -> Trace:
    """Read a trace file; TraceFormatError (one line) when missing, truncated, foreign or newer."""
    path = Path(path)
    if not path.exists():
        raise TraceFormatError(f"{path}: no such file")
    if path.is_dir():
        raise TraceFormatError(f"{path}: is a directory, not a trace file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"{path}: cannot read ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{path}: not valid JSON, truncated or corrupt (line {exc.lineno}: {exc.msg})") from None
    return Trace.from_json(doc, source=str(path))


# --- JSON helpers ---------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Dataclasses/tuples/mappings -> JSON-ready builtins."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_plain(x) for x in obj]
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def _frame_from_json(raw: Any) -> Frame | None:
    if raw is None:
        return None
    return Frame(file=str(raw["file"]), line=int(raw["line"]), function=str(raw["function"]))


def _copy_to_json(c: CopyRecord) -> dict[str, Any]:
    d = _plain(c)
    d["device"] = None if c.device is None else _plain(c.device)
    return d


def _copy_from_json(raw: dict[str, Any]) -> CopyRecord:
    known = {f.name for f in fields(CopyRecord)}
    kw = {k: v for k, v in raw.items() if k in known}
    missing = [k for k in ("seq", "op", "kind", "bytes", "noop", "src_device", "dst_device", "shape", "dtype") if k not in raw]
    if missing:
        raise TraceFormatError(f"copy record is missing {', '.join(missing)}: {json.dumps(raw)[:120]}")
    kw["shape"] = tuple(int(x) for x in raw["shape"])
    kw["site"] = _frame_from_json(raw.get("site"))
    kw["stack"] = tuple(_frame_from_json(f) for f in raw.get("stack", ()))
    kw["device"] = None if raw.get("device") is None else DeviceTiming(**raw["device"])
    kw["findings"] = tuple(Finding(**f) for f in raw.get("findings", ()))
    kw["verification"] = _verification_from_json(raw.get("verification"))
    # Unknown keys written by a later minor addition are kept, not dropped.
    extra = dict(raw.get("extra", {}))
    extra.update({k: v for k, v in raw.items() if k not in known})
    kw["extra"] = extra
    return CopyRecord(**kw)


def _verification_from_json(raw: Any) -> Verification | None:
    if raw is None:
        return None
    v = Verification(status=str(raw["status"]), detail=str(raw["detail"]), seq=None if raw.get("seq") is None else int(raw["seq"]))
    if v.status not in VERIFICATION_STATUSES:
        raise TraceFormatError(f"unknown verification status {v.status!r} (valid: {', '.join(VERIFICATION_STATUSES)})")
    return v


def _op_to_json(o: OpRecord) -> dict[str, Any]:
    d = _plain(o)
    d["reads"] = [a.to_json() for a in o.reads]
    d["writes"] = [a.to_json() for a in o.writes]
    return d


def _op_from_json(raw: dict[str, Any]) -> OpRecord:
    known = {f.name for f in fields(OpRecord)}
    kw = {k: v for k, v in raw.items() if k in known}
    kw["reads"] = tuple(Access.from_json(a) for a in raw.get("reads", ()))
    kw["writes"] = tuple(Access.from_json(a) for a in raw.get("writes", ()))
    kw["allocs"] = tuple(int(s) for s in raw.get("allocs", ()))
    kw["frees"] = tuple(int(s) for s in raw.get("frees", ()))
    kw["site"] = _frame_from_json(raw.get("site"))
    return OpRecord(**kw)


def _meta_to_json(m: TraceMeta) -> dict[str, Any]:
    return _plain(m)


def _meta_from_json(raw: Any) -> TraceMeta:
    if not isinstance(raw, dict):
        raise TraceFormatError(f"'meta' must be an object, got {type(raw).__name__}")
    known = {f.name for f in fields(TraceMeta)}
    kw = {k: v for k, v in raw.items() if k in known}
    kw["argv"] = tuple(raw.get("argv", ()))
    kw["notes"] = tuple(raw.get("notes", ()))
    extra = dict(raw.get("extra", {}))
    extra.update({k: v for k, v in raw.items() if k not in known})
    kw["extra"] = extra
    return TraceMeta(**kw)
