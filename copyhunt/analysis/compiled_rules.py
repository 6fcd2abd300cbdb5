"""Verdicts for copies inside torch.compile'd graphs (records of origin ``compiled``).

The dispatch trace holds no per-op reads and writes inside a compiled graph, so the eager rules cannot
run there. What the graph itself shows is kept by the capture in ``CopyRecord.compiled``: how Inductor runs
the copy (its own copy kernel, fused into a computing kernel, an extern call), the kernel names, whether
it writes a graph input in place. From that evidence alone no copy can be proven eliminable, so every
compiled copy is "needed", with a reason that says what is known and what is not.
"""

from __future__ import annotations

from copyhunt.records import CopyRecord, Finding

UNKNOWN = "the graph's reads and writes are not traced op by op, so whether the copy itself could go is not judged"


def compiled_finding(copy: CopyRecord) -> Finding:
    """The finding for one compiled copy record (always "needed"; the reason carries the evidence)."""
    info = copy.compiled
    if info is None:
        return Finding(
            "needed",
            f"inside a compiled graph, with no record of how Inductor runs it; {UNKNOWN}",
            "trace the same code eagerly (--eager) to judge the copy op by op",
        )
    kernels = ", ".join(info.kernels) or "an unnamed kernel"
    if info.mutates_input:
        return Finding(
            "needed",
            f"writes a graph input in place ({info.mutates_input}): the caller sees it after the compiled code ({kernels})",
            "keep it, or pass the value out of the compiled function instead of writing into its argument",
        )
    if info.how == "fused":
        partners = ", ".join(info.fused_with)
        return Finding(
            "needed",
            f"fused by Inductor into {kernels} with {partners or 'computing ops'}: it costs no separate pass; {UNKNOWN}",
            "nothing to gain from removing it alone; compare with an eager trace (copyhunt diff) to see what compilation removed",
        )
    if info.how == "extern":
        return Finding(
            "needed",
            f"Inductor calls an existing kernel for it ({kernels}); {UNKNOWN}",
            "trace the same code eagerly (--eager) to judge the copy op by op",
        )
    return Finding(
        "needed",
        f"Inductor kept it as a copy kernel of its own ({kernels}); {UNKNOWN}",
        "trace the same code eagerly (--eager) to judge the copy op by op",
    )
