"""The torch.compile capture: the copies that survive compilation (Inductor), per execution, at user lines.

``hooks``: ``CompiledCapture``, the hunt's compile-time and run-time hooks (Inductor's scheduler pass,
the wrapped ``CompiledFxGraph.__call__``) and the records it builds; ``graph``: the description of one
compiled graph's copies from its FX nodes; ``inductor``: which copies survive and how Inductor runs
them, read from its scheduler nodes and provenance map; ``device_join``: Inductor's GPU kernels joined
to those records; ``eager``: ``compiled="eager"`` (``--eager``), where compiled code runs op by op.

It sits on top of the dispatch capture (its seq numbers, op records and mode), which knows it only
through ``dispatch.set_compile_hook``: a hunt of a program that never compiles imports no Inductor.
See docs/compile.md.
"""

from copyhunt.capture.compiled.device_join import join_compiled
from copyhunt.capture.compiled.eager import EagerCompileNote, eager_notes
from copyhunt.capture.compiled.hooks import CompiledCapture

__all__ = ["CompiledCapture", "EagerCompileNote", "eager_notes", "join_compiled"]
