"""The trace data model: what a capture saw, what was found about it, and one copy as readers see it.

- ``CopyRecord``, ``OpRecord``, ``StorageInfo``: the captured facts (the dispatch capture, the device
  join's replays and library copies, or a foreign profiler file), nothing else.
- ``Trace``: the records plus, beside the copies and keyed by a copy's position in ``Trace.copies``,
  the GPU timings (``timings``), the verdict analysis' findings (``findings``; None until judged) and
  what ``copyhunt verify`` found (``verifications``).
- ``Copy``: the read-side join of one copy record with its timing, findings and verification;
  ``verdict`` is derived from the strongest finding, so no fact is stored twice.

Everything else in copyhunt produces or consumes these records. This module imports only the
standard library, so a saved trace can be loaded (and tested) anywhere; the file format lives in
``copyhunt.tracefile``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

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
    "compiled",  # kept by torch.compile (Inductor) inside a compiled graph, one per execution
)


@dataclass(frozen=True)
class Frame:
    """One Python source location: where a copy (or op) was issued."""

    file: str
    line: int
    function: str
    # The text of that line (stripped), read when the trace was taken, for copy sites only: readers show
    # it without opening the file a trace names (a trace from elsewhere may name any file).
    source_text: str | None = field(default=None, compare=False)

    def short(self) -> str:
        """``path:line function``, unshortened (``copyhunt.text.short_site`` shortens the path)."""
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


@dataclass(frozen=True, slots=True)  # slots: one per op access of a long hunt (issue 12's memory target)
class Access:
    """A byte range of one storage read or written by an op.

    ``dense`` is True when the op touches every byte of the range (a contiguous tensor);
    a strided view touches only some bytes between ``offset`` and ``offset + nbytes``.
    """

    storage: int
    offset: int
    nbytes: int
    dense: bool = True


#: What a hunt does with torch.compile'd code (``hunt(compiled=...)``, ``CompiledHunt.mode``): keep it
#: compiled and record the copies Inductor kept, or run it op by op as if it were not compiled.
COMPILED_MODES = ("compiled", "eager")

#: How Inductor runs a copy it kept in a compiled graph (``CompiledCopy.how``).
COMPILED_HOW = (
    "kernel",  # a copy kernel of its own: a pass over memory that only copies
    "fused",  # inside a kernel that also computes: no separate pass
    "extern",  # an existing kernel Inductor calls (an aten op)
)


@dataclass(frozen=True)
class CompiledCopy:
    """What a torch.compile'd graph says about one copy it kept (``CopyRecord.compiled``, origin "compiled").

    A graph's kept copy gives one record per execution of the graph; ``call`` is the seq of that
    execution's op record (the ``copyhunt#<seq>`` range its kernels run in). See docs/compile.md.
    """

    graph: int  # Inductor's graph id
    node: str  # the FX node in the post-grad graph, e.g. "clone_1"
    graph_op: str  # the node's own op, e.g. "prims.convert_element_type.default" (CopyRecord.op: the eager op)
    how: str  # one of COMPILED_HOW
    call: int  # seq of the execution that ran it
    execution: int = 0  # which execution of its graph during the hunt (0, 1, ...)
    kernels: tuple[str, ...] = ()  # kernels (or extern calls) that write it, when Inductor named them
    fused_with: tuple[str, ...] = ()  # how == "fused": the computing FX nodes sharing its kernel
    mutates_input: str | None = None  # the graph input it writes in place (a copy_ into an argument)
    src_is_input: bool = False  # every source is a graph input (nothing in the graph produced it)
    # how == "fused": device time of the computing kernel it rides in, as the device join measured it.
    # Not copy time (the copy makes no pass of its own), so not in Trace.timings.
    kernel_us: float | None = None


@dataclass(frozen=True)
class CopyRecord:
    """One executed copy of tensor data, as captured (or imported)."""

    seq: int  # position in the op stream of the hunt (shared numbering with OpRecord.seq); replays share it
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
    src_storage: int | None = None  # storage ids, join with OpRecord accesses (the first source)
    dst_storage: int | None = None
    src_storages: tuple[int, ...] = ()  # every source storage in argument order, when there are several (cat)
    src_dtypes: tuple[str, ...] = ()  # and each source's dtype (the verdicts judge every source of a cat)
    src_contiguity: tuple[bool | None, ...] = ()  # and whether each source is contiguous
    bytes_exact: bool = True  # False: `bytes` is an upper bound (bool-mask index on a GPU) or unknown (0)
    origin: str = "dispatch"  # one of ORIGINS
    graph_replay: int | None = None  # replay index for origin == "graph-replay"
    graph: int | None = None  # which captured graph a replay ran (its capture order in the device trace)
    compiled: CompiledCopy | None = None  # origin == "compiled": how the compiled graph runs it
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys written by a newer copyhunt, kept as read

    @property
    def moved_bytes(self) -> int:
        """Bytes this copy really moved: a noop copy is counted as a copy but moves nothing."""
        return 0 if self.noop else self.bytes


def moved_bytes(copies: Iterable[Any]) -> int:
    """Bytes the copies really moved (noop copies move none): THE byte total of every table and budget."""
    return sum(c.moved_bytes for c in copies)


@dataclass(frozen=True, slots=True)  # slots: one per op of a long hunt (issue 12's memory target)
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


@dataclass(frozen=True, slots=True)  # slots: one per storage of a long hunt
class StorageInfo:
    """A storage seen during the hunt (ids are small integers local to one trace)."""

    id: int
    device: str
    nbytes: int
    alive_at_end: bool  # still referenced when the hunt ended (may be read later)


@dataclass(frozen=True)
class CompiledGraphRun:
    """One graph torch.compile (Inductor) compiled while a hunt ran (``CompiledHunt.graphs``)."""

    graph: int  # Inductor's graph id
    executions: int  # how often it ran during the hunt
    copies: tuple[str, ...] = ()  # FX nodes it keeps as copies (each recorded once per execution)
    removed: tuple[str, ...] = ()  # copy nodes of the traced code Inductor did not materialise
    kernel_names: bool = False  # Inductor's provenance map named the kernels of its copies


@dataclass(frozen=True)
class CompiledHunt:
    """What a hunt did with torch.compile'd code (``TraceMeta.compiled``; docs/compile.md)."""

    mode: str  # one of COMPILED_MODES
    graphs: tuple[CompiledGraphRun, ...] = ()  # mode "compiled": graphs compiled during the hunt
    before_hunt_executions: int = 0  # executions of graphs compiled before the hunt (copies unknown)
    ran_eagerly: tuple[str, ...] = ()  # mode "eager": the compiled functions that ran op by op, "name (file:line)"
    device_events_joined: int | None = None  # GPU events the device join matched to compiled copies


#: Analysis steps that run after the capture (``TraceMeta.pending`` lists those a file still lacks).
ANALYSIS_STEPS = ("device-join", "verdicts")


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
    focus: tuple[str, ...] = ()  # attribution globs the capture used (they chose the sites)
    hide: tuple[str, ...] = ()
    view: Mapping[str, Any] = field(default_factory=dict)  # the selection shown by default (Selection.to_json)
    ops_complete: bool = False  # every op's storage accesses were recorded: the verdicts can be judged
    kineto_trace: str | None = None  # the Kineto (Chrome) trace of the same region, when one was kept
    device_join: Mapping[str, Any] | None = None  # device join statistics and post-processing timings
    imported_from: str | None = None  # the foreign format a trace was imported from ("chrome", "rocprofv3-csv"...)
    compiled: CompiledHunt | None = None  # what a hunt did with torch.compile'd code
    notes: tuple[str, ...] = ()  # plain statements for the reader (what a file lacks, fallbacks...)
    # Where the recorded file paths are relative to (the project's git work tree, else the directory
    # the trace was taken in); None: the paths are as Python saw them (absolute).
    root: str | None = None
    # Analysis steps not yet run on this file, from ANALYSIS_STEPS ("device-join", "verdicts"): the
    # runner saves the raw trace before analysing it, and a Ctrl-C during analysis leaves it so.
    pending: tuple[str, ...] = ()
    max_ops: int | None = None  # ring mode (--max-ops N): at most N op records were kept
    ops_dropped: int = 0  # op records ring mode dropped (the oldest ones): the first kept op's seq is where history starts
    # The process that ran the hunt (docs/multiprocess.md): its id, its parent's, and the
    # torch.distributed coordinates when it is a rank (RANK / WORLD_SIZE / LOCAL_RANK).
    pid: int | None = None
    parent_pid: int | None = None
    rank: int | None = None
    world_size: int | None = None
    local_rank: int | None = None
    children: tuple[str, ...] = ()  # trace files of the child processes it followed, relative to this file's folder
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys written by a newer copyhunt, kept as read


@dataclass(frozen=True)
class Trace:
    """A whole trace: metadata, copies, per-op storage accesses; timings and findings beside the copies.

    ``timings``, ``findings`` and ``verifications`` are keyed by a copy's position in ``copies`` (its
    key: graph replays share the capture-time ``seq``, positions never repeat). ``findings`` is None
    until the verdict analysis ran; then every copy it judged has at least one finding.
    ``verifications`` holds the copies whose site ``copyhunt verify`` re-ran.
    """

    meta: TraceMeta = field(default_factory=TraceMeta)
    copies: tuple[CopyRecord, ...] = ()
    ops: tuple[OpRecord, ...] = ()
    storages: tuple[StorageInfo, ...] = ()
    timings: Mapping[int, DeviceTiming] = field(default_factory=dict)
    findings: Mapping[int, tuple[Finding, ...]] | None = None
    verifications: Mapping[int, Verification] = field(default_factory=dict)  # copyhunt verify, by copy position

    @property
    def judged(self) -> bool:
        """True once the verdict analysis ran over this trace (zero copies included)."""
        return self.findings is not None

    @property
    def total_bytes(self) -> int:
        """Bytes moved by all copies (noop copies move none)."""
        return moved_bytes(self.copies)

    @property
    def verified(self) -> bool:
        """True when copyhunt verify re-ran some of this trace's sites."""
        return bool(self.verifications)

    def read_copies(self) -> tuple["Copy", ...]:
        """Every copy with its timing, findings and verification, in trace order."""
        timings, findings, proofs = self.timings, self.findings or {}, self.verifications
        return tuple(Copy(i, c, timings.get(i), findings.get(i, ()), proofs.get(i)) for i, c in enumerate(self.copies))


@dataclass(frozen=True)
class Copy:
    """One copy as readers see it: the captured record, its GPU timing, its findings and its verification.

    Every ``CopyRecord`` field reads through (``c.site``, ``c.bytes``...); ``verdict``, ``reason``
    and ``suggestion`` are the strongest finding's (None when the copy was not judged).
    """

    key: int  # position in Trace.copies
    record: CopyRecord
    device: DeviceTiming | None = None
    findings: tuple[Finding, ...] = ()
    verification: Verification | None = None  # copyhunt verify's result for the copy's site; None: not re-run

    @property
    def verdict(self) -> str | None:
        """The strongest finding's verdict, or None when not judged."""
        return self.findings[0].verdict if self.findings else None

    @property
    def reason(self) -> str | None:
        """The strongest finding's one-line reason."""
        return self.findings[0].reason if self.findings else None

    @property
    def suggestion(self) -> str | None:
        """The strongest finding's one-line suggestion."""
        return self.findings[0].suggestion if self.findings else None

    @property
    def moved_bytes(self) -> int:
        """Bytes this copy really moved (0 for a noop copy)."""
        return self.record.moved_bytes


def _read_through(name: str) -> property:
    return property(lambda self: getattr(self.record, name), doc=f"The record's ``{name}``.")


for _f in fields(CopyRecord):
    setattr(Copy, _f.name, _read_through(_f.name))
del _f
