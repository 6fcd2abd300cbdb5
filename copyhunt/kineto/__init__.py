"""Kineto Chrome traces (what torch.profiler exports), read with the standard library only.

``events``: one event and what its category and name say (copy kind, graph node type, kernel short
name); ``trace``: the parser and the indexed ``KinetoTrace`` every join queries; ``graphs``: which
captured launch each node of a CUDA-graph replay came from. The device capture, the importers and the
timeline export build on it; it imports nothing of copyhunt but ``copyhunt.errors``, so the CPU test
suite reads real GPU traces without torch's profiler or a GPU.
"""

from copyhunt.kineto.events import COPY_KERNEL_RE, KEvent, copy_kind, launch_type, node_type, parse_python_frame, short_kernel
from copyhunt.kineto.trace import BRIDGE_PREFIX, KinetoTrace, load, parse, read_json

__all__ = [
    "BRIDGE_PREFIX",
    "COPY_KERNEL_RE",
    "KEvent",
    "KinetoTrace",
    "copy_kind",
    "launch_type",
    "load",
    "node_type",
    "parse",
    "parse_python_frame",
    "read_json",
    "short_kernel",
]
