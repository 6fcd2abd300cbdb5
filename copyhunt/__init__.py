"""copyhunt: find, judge and gate the tensor copies nobody meant to write.

Public API::

    with copyhunt.hunt() as h:          # record every copy (and every op's storage accesses)
        model(x)
    h.copies                            # copyhunt.Copy: record, device time, verdict (one per copy)

    with copyhunt.region("moe"):        # label records; also a profiler / NVTX range
        ...

    copyhunt.note("backend: triton")    # a program's own statement for the trace's notes (no-op outside a hunt)

    copyhunt.save_trace(h.trace, "t.json"); copyhunt.load_trace("t.json")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copyhunt.notes import note
from copyhunt.records import Copy, CopyRecord, Trace
from copyhunt.tracefile import load as load_trace
from copyhunt.tracefile import save as save_trace

__version__ = "0.1.0"

__all__ = ["hunt", "region", "note", "Trace", "Copy", "CopyRecord", "load_trace", "save_trace", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from copyhunt.capture.regions import region
    from copyhunt.hunting import hunt


def __getattr__(name: str) -> Any:
    # torch is imported lazily so `copyhunt --help` and `copyhunt report` start fast.
    if name == "hunt":
        from copyhunt.hunting import hunt

        return hunt
    if name == "region":
        from copyhunt.capture.regions import region

        return region
    raise AttributeError(f"module 'copyhunt' has no attribute {name!r}")
