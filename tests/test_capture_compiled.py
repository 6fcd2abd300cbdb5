"""torch.compile under a hunt: compiled code stays compiled, and the copies Inductor kept are recorded.

One program (``step``) exercises every case the issue names: a transpose-contiguous and a ``cat`` that
Inductor fuses into a computing kernel, a copy into a mutated input (``buf.copy_(x)``), a graph break
in the middle, a cast Inductor removes (fused into the sum, never materialised), a copy kernel
(``x.t().contiguous()`` returned alone), a copy Inductor adds itself (the contiguous input of a
convolution on a transposed tensor), and a recompilation (a second shape makes the graphs dynamic; a
third shape reuses them, so bytes are sized per execution from the inputs).

Compiling is slow on 2 cores, so the module compiles ``step`` under one hunt (4 graphs: 2 static, 2
dynamic) and a copy of it once without any hunt (2 graphs) and shares the results with every test.
Lines are found from the markers in the source, so editing this file cannot silently shift them.
"""

from __future__ import annotations

import inspect
import types

import pytest
import torch
import torch._dynamo.utils as dynamo_utils

import copyhunt
from copyhunt.analysis import judge
from copyhunt.analysis.diff import diff_traces
from copyhunt.hunting import HuntOptionError
from copyhunt.records import Trace
from copyhunt.view import view
from factories import with_copies


def step(x: torch.Tensor, buf: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, ...]:
    y = x.t().contiguous()  # @contig
    z = torch.cat([y, y * 2])  # @cat
    buf.copy_(x)  # @copy
    counter.add_(1)  # @inplace
    torch._dynamo.graph_break()
    w = (z + 1).to(torch.float64)  # @cast
    k = x.t().contiguous()  # @alone
    c = torch.nn.functional.conv2d(x.t()[None, None], buf[None, None, :2, :2])  # @conv
    return w.sum(0), y @ x, k, c


def _line(marker: str) -> int:
    lines, start = inspect.getsourcelines(step)
    return start + next(i for i, text in enumerate(lines) if text.rstrip().endswith(f"# @{marker}"))


def _fresh_copy(fn: types.FunctionType) -> types.FunctionType:
    """The same function with its own code object: Dynamo caches compiled code per code object."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__)


def _inputs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return torch.randn(n, n, generator=g), torch.zeros(n, n), torch.zeros(n)


SHAPES = (4, 4, 4, 6, 5)  # 3 calls, then a recompile (6: dynamic graphs), then a reuse (5)


@pytest.fixture(scope="module")
def runs() -> dict[str, object]:
    """Compiled under a hunt, compiled without one, and eager: outputs, traces and compile counts."""
    torch._dynamo.reset()
    plain = torch.compile(_fresh_copy(step))
    untraced = []
    for n in SHAPES[:3]:
        x, buf, counter = _inputs(n)
        untraced.append((plain(x, buf, counter), buf, counter))
    compiled = torch.compile(step)
    graphs_before = dynamo_utils.counters["stats"]["unique_graphs"]
    traced = []
    with copyhunt.hunt() as h:
        for n in SHAPES:
            x, buf, counter = _inputs(n)
            traced.append((compiled(x, buf, counter), buf, counter))
    graphs = dynamo_utils.counters["stats"]["unique_graphs"] - graphs_before
    with copyhunt.hunt(compiled="eager") as e:
        for n in SHAPES[:3]:
            compiled(*_inputs(n))
    # The same compiled code outside any hunt, then under a new hunt: it still runs compiled.
    compiled(*_inputs(4))
    with copyhunt.hunt() as later:
        compiled(*_inputs(4))
    return {"untraced": untraced, "traced": traced, "hunt": h.trace, "eager": e.trace, "later": later.trace, "graphs": graphs}


def _by_line(trace: Trace) -> dict[tuple[int, str], list]:
    out: dict[tuple[int, str], list] = {}
    for c in trace.copies:
        if c.site is not None and c.site.file == __file__:
            out.setdefault((c.site.line, c.op), []).append(c)
    return out


def test_outputs_identical_with_and_without_the_hunt(runs: dict) -> None:
    # Inductor's code compiled under the hunt computes exactly what it computes without one.
    for (out_a, buf_a, counter_a), (out_b, buf_b, counter_b) in zip(runs["untraced"], runs["traced"]):
        assert all(torch.equal(a, b) for a, b in zip(out_a, out_b))
        assert torch.equal(buf_a, buf_b) and torch.equal(counter_a, counter_b)


def test_compiled_code_stays_compiled(runs: dict) -> None:
    trace = runs["hunt"]
    # 2 graphs (the break splits step) compiled for 4x4, 2 more (dynamic) for the second shape.
    assert runs["graphs"] == 4
    graphs = trace.meta.compiled.graphs
    assert [g.executions for g in graphs] == [3, 3, 2, 2]
    # The dispatch mode saw no op inside the compiled code: only each execution, as two ops (its inputs
    # read; its mutated inputs and outputs written), and the test's own tensor factories.
    g0, g1, g2, g3 = (f"compiled graph {g.graph}" for g in graphs)
    compiled_ops = [o.op for o in trace.ops if o.op.startswith("compiled ")]
    assert compiled_ops == [op for g in [g0, g1] * 3 + [g2, g3] * 2 for op in (g, f"{g} (outputs)")]
    first, outputs = [o for o in trace.ops if o.op in (g0, f"{g0} (outputs)")][:2]  # the first execution
    assert len(first.reads) == 3 and not first.writes  # x, buf, counter
    assert len(outputs.writes) >= 2 and outputs.allocs  # buf and counter written, fresh outputs
    assert {o.op for o in trace.ops} - set(compiled_ops) == {"aten.randn.generator", "aten.zeros.default"}


def test_surviving_copies_at_their_lines_per_execution(runs: dict) -> None:
    by = _by_line(runs["hunt"])
    f4, f6, f5 = 4 * 4 * 4, 6 * 6 * 4, 5 * 5 * 4  # float32 bytes of one n x n tensor
    sizes = [f4, f4, f4, f6, f5]
    # One record per copy per execution, sized for that execution's inputs.
    assert [c.bytes for c in by[(_line("contig"), "aten.clone.default")]] == sizes
    assert [c.bytes for c in by[(_line("cat"), "aten.cat.default")]] == [2 * s for s in sizes]
    assert [c.bytes for c in by[(_line("copy"), "aten.copy_.default")]] == sizes
    assert [c.bytes for c in by[(_line("alone"), "aten.clone.default")]] == sizes
    # The convolution's transposed input: a contiguous copy Inductor added on its own.
    assert [c.bytes for c in by[(_line("conv"), "inductor.copy")]] == sizes
    # The cast is fused into the sum's kernel and never written: Inductor removed that copy. The
    # in-place add on an input is computed straight into it: no copy (functionalization's copy_ aside).
    assert (_line("cast"), "aten._to_copy.default") not in by
    assert not [k for k in by if k[0] == _line("inplace")]
    assert {k for k in by} == {
        (_line("contig"), "aten.clone.default"),
        (_line("cat"), "aten.cat.default"),
        (_line("copy"), "aten.copy_.default"),
        (_line("alone"), "aten.clone.default"),
        (_line("conv"), "inductor.copy"),
    }
    assert all(c.origin == "compiled" and c.kind == "d2d" and c.site.function == "step" for v in by.values() for c in v)


def test_how_inductor_runs_each_copy(runs: dict) -> None:
    first = {k: v[0].compiled for k, v in _by_line(runs["hunt"]).items()}
    contig = first[(_line("contig"), "aten.clone.default")]
    # The transpose-contiguous shares its C++ kernel with the cat's multiply: no separate pass.
    assert contig.how == "fused" and "mul" in contig.fused_with
    assert first[(_line("cat"), "aten.cat.default")].how == "fused"
    copy = first[(_line("copy"), "aten.copy_.default")]
    assert copy.mutates_input is not None and copy.src_is_input is True
    alone = first[(_line("alone"), "aten.clone.default")]
    # x.t().contiguous() returned as it is: a copy kernel, nothing computed in it (the C++ backend
    # merges it with the convolution's input copy; the convolution itself is an extern call).
    assert alone.how == "kernel" and alone.fused_with == () and alone.kernels
    added = first[(_line("conv"), "inductor.copy")]
    assert added.how == "kernel" and added.kernels == alone.kernels
    assert all(k.startswith("cpp_fused_") for c in first.values() for k in c.kernels)


def test_graph_break_and_recompile_give_separate_graphs(runs: dict) -> None:
    by = _by_line(runs["hunt"])
    graphs = [c.compiled.graph for c in by[(_line("contig"), "aten.clone.default")]]
    after_break = [c.compiled.graph for c in by[(_line("alone"), "aten.clone.default")]]
    g0, g1, g2, g3 = (g.graph for g in runs["hunt"].meta.compiled.graphs)
    assert graphs == [g0, g0, g0, g2, g2]  # before the break; recompiled once for the new shape
    assert after_break == [g1, g1, g1, g3, g3]


def test_notes_say_what_compilation_kept(runs: dict) -> None:
    notes = [n for n in runs["hunt"].meta.notes if n.startswith("torch.compile:")]
    assert notes == [
        "torch.compile: 4 compiled graph(s) ran 10 time(s) compiled; per execution they keep 10 copy(ies) "
        "(6 fused into computing kernels: no separate pass; 2 added by Inductor itself, op inductor.copy) and "
        "Inductor removed 4 copy op(s) of the traced code (origin 'compiled': one record per copy per execution)"
    ]


def test_eager_option_runs_op_by_op_and_says_so(runs: dict) -> None:
    eager = runs["eager"]
    by = _by_line(eager)
    # The old behaviour: every copy of the uncompiled code, the cast included.
    assert {k: len(v) for k, v in by.items()} == {
        (_line("contig"), "aten.clone.default"): 3,
        (_line("cat"), "aten.cat.default"): 3,
        (_line("copy"), "aten.copy_.default"): 3,
        (_line("cast"), "aten._to_copy.default"): 3,
        (_line("alone"), "aten.clone.default"): 3,
    }
    assert all(c.origin == "dispatch" for c in eager.copies)
    assert eager.meta.compiled.mode == "eager"
    (ran,) = eager.meta.compiled.ran_eagerly
    assert ran.startswith("step (") and __file__ in ran
    assert any(n.startswith("compiled='eager': 1 torch.compile'd function(s) ran op by op") for n in eager.meta.notes)


def test_code_compiled_before_the_hunt_is_counted_not_described(runs: dict) -> None:
    later = runs["later"]
    assert [c for c in later.copies if c.origin == "compiled"] == []
    assert later.meta.compiled.before_hunt_executions == 2  # both graphs, once, still compiled
    assert any("compiled before the hunt started ran 2 time(s)" in n for n in later.meta.notes)


def test_diff_eager_against_compiled_shows_what_compilation_changed(runs: dict) -> None:
    hunt = runs["hunt"]
    static = {g.graph for g in hunt.meta.compiled.graphs[:2]}
    first_three = with_copies(hunt, (c for c in hunt.copies if c.compiled.graph in static))
    d = diff_traces(view(runs["eager"]), view(first_three))
    status = {(c.key.line, c.key.op): c.status for c in d.changes}
    assert status == {
        (_line("contig"), "aten.clone.default"): "same",
        (_line("cat"), "aten.cat.default"): "same",
        (_line("copy"), "aten.copy_.default"): "same",
        (_line("cast"), "aten._to_copy.default"): "removed",
        (_line("alone"), "aten.clone.default"): "same",
        (_line("conv"), "inductor.copy"): "added",
    }


def test_verdicts_of_compiled_copies_say_what_is_known(runs: dict) -> None:
    judged = {(c.site.line, c.op): c for c in judge(runs["hunt"]).read_copies() if c.origin == "compiled"}
    fused = judged[(_line("contig"), "aten.clone.default")]
    assert fused.verdict == "needed"
    assert fused.reason.startswith("fused by Inductor into cpp_fused_")
    copy = judged[(_line("copy"), "aten.copy_.default")]
    assert copy.reason.startswith("writes a graph input in place (arg")
    alone = judged[(_line("alone"), "aten.clone.default")]
    assert alone.reason.startswith("Inductor kept it as a copy kernel of its own")


def test_compiled_option_is_checked() -> None:
    with pytest.raises(HuntOptionError, match="compiled must be one of 'compiled', 'eager', got 'fast'"):
        copyhunt.hunt(compiled="fast")


EAGER_SCRIPT = """\
import torch

def step(x):
    return x.t().contiguous() * 2  # line 4

f = torch.compile(step)
f(torch.ones(4, 8))
"""


def test_cli_eager_flag_says_which_functions_ran_op_by_op(tmp_path, monkeypatch, capsys) -> None:
    from copyhunt.cli import main
    from copyhunt.tracefile import load

    monkeypatch.setenv("COLUMNS", "200")
    script = tmp_path / "prog.py"
    script.write_text(EAGER_SCRIPT)
    out = tmp_path / "t.json"
    assert main(["trace", str(script), "--eager", "--no-device-trace", "-o", str(out)]) == 0
    trace = load(out)
    assert [(c.site.line, c.op, c.origin) for c in trace.copies] == [(4, "aten.clone.default", "dispatch")]
    (ran,) = trace.meta.compiled.ran_eagerly
    assert ran.startswith(f"step ({script}")
    printed = capsys.readouterr().out
    assert "note: compiled='eager': 1 torch.compile'd function(s) ran op by op" in printed


def test_table_says_how_inductor_runs_the_kept_copies(runs: dict) -> None:
    import io

    from rich.console import Console

    from copyhunt.report.table import render_table

    buf = io.StringIO()
    render_table(view(judge(runs["hunt"])), Console(file=buf, width=200, no_color=True), cwd=str(__import__("pathlib").Path(__file__).parent))
    lines = buf.getvalue().splitlines()
    start = lines.index("Kept by torch.compile (Inductor), per execution:")
    section = lines[start + 1 : start + 6]
    alone = next(line for line in section if f"test_capture_compiled.py:{_line('alone')} " in line)
    assert alone.endswith("step: a copy kernel of its own: " + ", ".join(
        next(c for c in runs["hunt"].copies if c.site.line == _line("alone")).compiled.kernels
    ))
    copy = next(line for line in section if f"test_capture_compiled.py:{_line('copy')} " in line)
    assert "fused into cpp_fused_" in copy and copy.endswith("(no separate pass); writes a graph input in place (arg1_1)")


COMPILE_AFTER_START = """\
import torch


def alone(x):
    return x.t().contiguous()  # line 5

f = torch.compile(alone)
for _ in range(2):
    f(torch.ones(4, 8))
"""


def test_trace_of_a_script_that_compiles_after_the_hunt_started(tmp_path) -> None:
    # The usual `copyhunt trace` case, in a fresh process: Inductor is not loaded when the hunt starts,
    # so the hooks go in when Dynamo first asks the mode about compiling (not at start: that import
    # costs seconds, which a program that never compiles must not pay).
    import subprocess
    import sys

    from copyhunt.tracefile import load

    script = tmp_path / "prog.py"
    script.write_text(COMPILE_AFTER_START)
    out = tmp_path / "t.json"
    env = {**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(copyhunt.__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "copyhunt", "trace", str(script), "--no-device-trace", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    copies = load(out).copies
    assert [(c.site.line, c.op, c.origin, c.bytes, c.compiled.how) for c in copies] == [
        (5, "aten.clone.default", "compiled", 128, "kernel")
    ] * 2


def test_compiled_traces_round_trip_through_the_file(runs: dict, tmp_path) -> None:
    from copyhunt.tracefile import load, save

    for name in ("hunt", "eager"):
        assert load(save(runs[name], tmp_path / f"{name}.json")) == runs[name]


def noted(x: torch.Tensor) -> torch.Tensor:
    copyhunt.note("noted ran")
    return x.t().contiguous() * 2


def test_a_note_inside_compiled_code_costs_no_recompile() -> None:
    # Traced by Dynamo, copyhunt.note appends to the hunt's list, a global Dynamo guards on: every call
    # would recompile. The hunt has Dynamo call it after each execution instead.
    fn = torch.compile(_fresh_copy(noted))
    fn(torch.ones(4, 8))  # compiled outside any hunt: the graph guards on "no hunt running"
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    with copyhunt.hunt() as h:
        for _ in range(4):
            fn(torch.ones(4, 8))
    assert dynamo_utils.counters["stats"]["unique_graphs"] - before == 1  # that guard fails once
    assert "noted ran" in h.trace.meta.notes
    assert copyhunt.note not in torch._dynamo.config.reorderable_logging_functions  # given back
