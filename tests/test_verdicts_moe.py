"""Verdicts on the bundled MoE demo (CPU: tiny preset, 4 layers, 4 tokens, pure-torch backend).

Baseline: exactly 2 eliminable copies per layer, at the two copy lines of ``modular.py``; copy #1
names the backend op that made the experts' result, copy #2 the reused workspace. Fixed: neither.
"""

from __future__ import annotations

import re
from pathlib import Path

import copyhunt
from copyhunt.analysis import eliminable_summary, judge
from copyhunt_moe import demo
from copyhunt_moe.modular import copy_sites
from copyhunt.records import is_eliminable
from copyhunt.view import TraceView, view

LAYERS = 4
# One MoE output is tokens x hidden bf16 = 4 x 64 x 2 B = 512 B (tiny preset, hidden 64).
OUTPUT_BYTES = 512


#: The line of copyhunt_moe/workspace.py that allocates the shared workspace (torch.empty).
WORKSPACE_LINE = next(i for i, text in enumerate((Path(__file__).resolve().parent.parent / 'copyhunt_moe' / 'workspace.py').read_text().splitlines(), 1) if 'torch.empty(' in text)


def _trace(fn) -> TraceView:
    # focus on the MoE package so sites are the modular kernel's lines, not this test's call.
    with copyhunt.hunt(focus=("*/copyhunt_moe/*",)) as h:
        out = fn(device="cpu", layers=LAYERS)
    assert out.shape == (4, 64)
    return view(judge(h.trace))


def test_baseline_two_eliminable_output_copies_per_layer():
    sites = copy_sites()
    experts, finalize = sites["experts-copy"], sites["finalize-copy"]
    trace = _trace(demo.baseline)
    at = [(Path(c.site.file).name, c.site.line) for c in trace.copies]
    assert at == [("modular.py", experts.line), ("modular.py", finalize.line)] * LAYERS
    assert all(c.bytes == OUTPUT_BYTES and is_eliminable(c.verdict) for c in trace.copies)
    # 8 copies x 512 B = 4096 B = 4.0 KiB
    assert eliminable_summary(trace).line() == f"{2 * LAYERS} of {2 * LAYERS} copies, 4.0 KiB look eliminable"

    result_copies, workspace_copies = trace.copies[0::2], trace.copies[1::2]
    for c in result_copies:
        # The experts' result: a fresh buffer made by the backend's final reduction, read once, freed.
        assert c.verdict == "fresh-temporary"
        assert c.reason.startswith("source (a fresh 512 B buffer made by aten.sum.IntList_out at torch_experts.py:")
        # ...then dies: freed (noticed before a later op) or found dead by the final sweep.
        assert re.fullmatch(r"freed \(before aten\.[\w.]+ at \w+\.py:\d+\)|dead when the hunt ended", c.reason.split(", then ")[1])
        assert c.suggestion.startswith("let aten.sum.IntList_out at torch_experts.py:")
        assert "write straight into this copy's destination (destination passing: out=/output=" in c.suggestion
    workspace = {c.src_storage for c in workspace_copies}
    assert len(workspace) == 1  # every layer's copy #2 reads the same shared workspace
    (ws,) = workspace
    assert {c.dst_storage for c in result_copies} == {ws}
    for i, c in enumerate(workspace_copies):
        assert c.verdict == "fresh-temporary"
        assert [f.verdict for f in c.findings] == ["fresh-temporary", "chained"]
        assert c.reason.startswith(
            # The workspace, named by where it is allocated (copyhunt_moe/workspace.py's torch.empty).
            f"source (a reused 512 B buffer made by aten.empty.memory_format at workspace.py:{WORKSPACE_LINE}) was just written by aten.copy_ at modular.py:{experts.line}, "
            "is read only by this copy, then "
        )
        # Layers 1-3: the next layer's copy #1 overwrites the workspace; the last: it dies with the step.
        end = f"overwritten by aten.copy_ at modular.py:{experts.line}" if i < LAYERS - 1 else "dead when the hunt ended"
        assert c.reason.endswith(end)
        assert c.suggestion == (
            f"pass this copy's destination to aten.copy_ at modular.py:{experts.line} as its output instead of "
            f"the reused buffer made by aten.empty.memory_format at workspace.py:{WORKSPACE_LINE} (output alias), so this copy can be skipped; that producer is itself a copy, so one op would do"
        )


def test_fixed_path_has_neither_copy():
    sites = copy_sites()
    lines = {sites["experts-copy"].line, sites["finalize-copy"].line}
    trace = _trace(demo.fixed)
    assert [c for c in trace.copies if c.site is not None and c.site.line in lines] == []
    assert [c for c in trace.copies if is_eliminable(c.verdict)] == []


def test_baseline_copies_are_verified_by_re_execution():
    # copyhunt verify: with each site's 4 copies elided (the experts' result written into the workspace,
    # the workspace's value written into the caller's output), the step's output is bit-identical, and
    # so is every op's output (kind="script").
    from copyhunt.verify import verify, warm_and_trace

    def step():
        return demo.baseline(device="cpu", layers=LAYERS)

    sites = copy_sites()
    result = verify(step, warm_and_trace(step), kind="script")
    got = {(Path(r.plan.site.file).name, r.plan.site.line): (len(r.plan.copies), r.verification.status) for r in result.sites}
    assert got == {("modular.py", sites["experts-copy"].line): (LAYERS, "verified"),
                   ("modular.py", sites["finalize-copy"].line): (LAYERS, "verified")}
    assert all(c.verification is not None and c.verification.status == "verified" for c in result.trace.read_copies())
