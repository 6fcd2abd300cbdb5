"""copyhunt verify on small programs: right verdicts are verified, wrong ones refuted, untestable ones say why.

A verifier that verifies everything would pass a suite of right verdicts, so most tests here hand it
WRONG verdicts (the judged trace edited to claim what is false: a read copy called a dead store, a
mutated source called an alias) and require "refuted" at the op that first sees the difference.
Programs are float32 tensors of 4 elements unless a test says otherwise.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from copyhunt.records import Finding, Trace
from copyhunt.verify import verify, warm_and_trace
from copyhunt.verify.replay import Replay
from copyhunt.verify.run import run_once

HERE = Path(__file__)
_SOURCE = HERE.read_text().splitlines()


def line(mark: str) -> int:
    hits = [i + 1 for i, text in enumerate(_SOURCE) if re.search(rf"# mark: {re.escape(mark)}$", text)]
    assert len(hits) == 1, mark
    return hits[0]


def force(trace: Trace, verdict: str, at_line: int) -> Trace:
    """The trace with the copy at ``at_line`` judged ``verdict`` (whatever the rules said)."""
    f = Finding(verdict, "forced by the test", "forced")
    findings = dict(trace.findings or {})
    for i, c in enumerate(trace.copies):
        if c.site is not None and c.site.line == at_line:
            findings[i] = (f,)
    return replace(trace, findings=findings)


def verdicts_of(trace: Trace) -> list[str | None]:
    return [c.verdict for c in trace.read_copies()]


def site_result(result, at_line: int):  # type: ignore[no-untyped-def]
    (r,) = [r for r in result.sites if r.plan.site is not None and r.plan.site.line == at_line]
    return r.verification


# --- programs ---------------------------------------------------------------------------------------------


X = torch.arange(4.0)  # made before any run: the copy of it is no fresh temporary


def read_after_copy():
    buf = torch.zeros(4)
    buf.copy_(X)  # mark: read-after-copy
    return buf * 2  # mark: read-after-copy-reader


def overwritten_unread():
    x = torch.arange(4.0)
    buf = torch.zeros(4)
    buf.copy_(x)  # mark: overwritten
    buf.fill_(3.0)
    return buf * 2


def source_read_later():
    t = torch.arange(4.0) * 2  # mark: producer
    out = torch.empty(4)
    out.copy_(t)  # mark: source-read-later
    return out + t  # mark: source-reader


def fresh_into_buffer():
    out = torch.zeros(4)
    out.copy_(torch.arange(4.0) * 2)  # mark: fresh
    return out + 1


def destination_read_between():
    out = torch.ones(4)
    t = torch.arange(4.0) * 2
    s = out.sum()  # mark: dst-reader
    out.copy_(t)  # mark: dst-read-between
    return out, s


def clone_then_mutate():
    x = torch.arange(4.0)
    y = x.clone()  # mark: clone-mutated
    x.add_(1)
    return y + x  # mark: clone-reader


def clone_unmutated():
    x = torch.arange(4.0)
    y = x.clone()  # mark: clone-ok
    return y + x


def float_to_long():
    return (torch.arange(4.0) * 2.5).to(torch.long)  # mark: to-long


Y = torch.arange(4.0)


def there_and_back():
    h = Y.to(torch.float64)
    z = h * 1
    Y.copy_(h)  # mark: back
    return z


def part_of_clone():
    full = X.clone()
    return full[:2].to(torch.float64)  # mark: chained


def intermediate_read_elsewhere():
    t = X.clone()
    u = t.to(torch.float64)  # mark: chained-wrong
    return u, t.sum()  # mark: chained-reader


def self_copy():
    x = torch.arange(4.0)
    x.copy_(x)  # mark: noop
    return x


_counter = itertools.count()


def not_deterministic():
    buf = torch.zeros(4)
    buf.copy_(torch.full((4,), float(next(_counter))))  # mark: nondet
    return buf * 2


def prints_only():
    buf = torch.zeros(4)
    buf.copy_(torch.arange(4.0))  # mark: printed
    print(buf.sum().item())


# --- the replay numbers ops as the hunt does ----------------------------------------------------------------


def test_replay_runs_the_traced_op_sequence():
    trace = warm_and_trace(source_read_later)
    replay = Replay()
    run_once(source_read_later, replay)
    assert replay.names == [o.op for o in trace.ops]
    assert len(replay.prints) == len(trace.ops)


# --- right verdicts are verified ---------------------------------------------------------------------------


def test_dead_store_that_is_one_is_verified():
    result = verify(overwritten_unread, warm_and_trace(overwritten_unread))
    v = site_result(result, line("overwritten"))
    assert (v.status, v.detail) == ("verified", "identical return value and printed output on this input")


def test_fresh_temporary_that_is_one_is_verified():
    trace = warm_and_trace(fresh_into_buffer)
    (c,) = trace.read_copies()
    assert c.verdict == "fresh-temporary"
    assert site_result(verify(fresh_into_buffer, trace), line("fresh")).status == "verified"


def test_alias_that_is_safe_is_verified():
    trace = force(warm_and_trace(clone_unmutated), "defensive-clone", line("clone-ok"))
    assert site_result(verify(clone_unmutated, trace), line("clone-ok")).status == "verified"


@pytest.mark.parametrize("program, mark, verdict", [
    (there_and_back, "back", "round-trip"), (part_of_clone, "chained", "chained"), (self_copy, "noop", "noop"),
])
def test_round_trip_chained_and_noop_verdicts_are_verified(program, mark, verdict):
    trace = warm_and_trace(program)
    (c,) = [c for c in trace.read_copies() if c.site.line == line(mark)]
    assert c.verdict == verdict
    assert site_result(verify(program, trace), line(mark)).status == "verified"


# --- wrong verdicts are refuted, at the op that first sees the difference -----------------------------------


def test_chain_whose_intermediate_is_read_elsewhere_is_refuted():
    trace = force(warm_and_trace(intermediate_read_elsewhere), "chained", line("chained-wrong"))
    v = site_result(verify(intermediate_read_elsewhere, trace), line("chained-wrong"))
    assert v.status == "refuted"
    assert v.detail.endswith(f"aten.sum.default ({HERE.name}:{line('chained-reader')})")


def test_dead_store_that_is_read_is_refuted_at_its_reader():
    trace = warm_and_trace(read_after_copy)
    assert verdicts_of(trace) == ["needed"]
    v = site_result(verify(read_after_copy, force(trace, "dead-store", line("read-after-copy"))), line("read-after-copy"))
    assert v.status == "refuted"
    reader = [o for o in trace.ops if o.site is not None and o.site.line == line("read-after-copy-reader")][0]
    assert v.detail == f"the return value differs; first diverging op #{reader.seq} aten.mul.Tensor ({HERE.name}:{reader.site.line})"
    assert v.seq == reader.seq


def test_fresh_temporary_whose_source_is_read_again_is_refuted():
    trace = force(warm_and_trace(source_read_later), "fresh-temporary", line("source-read-later"))
    v = site_result(verify(source_read_later, trace), line("source-read-later"))
    assert v.status == "refuted"
    assert v.detail.endswith(f"aten.add.Tensor ({HERE.name}:{line('source-reader')})")


def test_fresh_temporary_whose_destination_is_read_before_the_copy_is_refuted():
    # Destination passing writes `out` when the value is made: the sum in between sees it.
    trace = force(warm_and_trace(destination_read_between), "fresh-temporary", line("dst-read-between"))
    v = site_result(verify(destination_read_between, trace), line("dst-read-between"))
    assert v.status == "refuted"
    assert v.detail.endswith(f"aten.sum.default ({HERE.name}:{line('dst-reader')})")


def test_alias_of_a_source_mutated_later_is_refuted():
    trace = force(warm_and_trace(clone_then_mutate), "defensive-clone", line("clone-mutated"))
    v = site_result(verify(clone_then_mutate, trace), line("clone-mutated"))
    assert v.status == "refuted"
    assert v.detail.endswith(f"aten.add.Tensor ({HERE.name}:{line('clone-reader')})")


def test_destination_passing_of_a_dtype_the_producer_cannot_write_is_refuted():
    # The false positive issue 11 found in T5: a float product cast to int64. The rules now keep it;
    # forced, the re-run calls mul's out= with an int64 buffer, which torch refuses.
    trace = warm_and_trace(float_to_long)
    assert verdicts_of(trace) == ["needed"]
    v = site_result(verify(float_to_long, force(trace, "fresh-temporary", line("to-long"))), line("to-long"))
    assert v.status == "refuted"
    assert v.detail.startswith(
        "the suggested change cannot be written as is: aten.mul.Tensor(..., out=<torch.int64>) raises: "
        "result type Float can't be cast to the desired output type Long"
    )


def test_script_kind_compares_every_op_and_the_printed_output():
    trace = force(warm_and_trace(prints_only), "dead-store", line("printed"))
    v = site_result(verify(prints_only, trace, kind="script"), line("printed"))
    assert v.status == "refuted" and v.detail.startswith("first diverging op #")


# --- not testable, with why --------------------------------------------------------------------------------


def test_a_program_that_differs_run_to_run_is_not_testable():
    trace = force(warm_and_trace(not_deterministic), "dead-store", line("nondet"))
    result = verify(not_deterministic, trace)
    v = site_result(result, line("nondet"))
    assert not result.deterministic
    assert (v.status, v.detail) == (
        "not-testable", "the program is not deterministic: two untouched re-runs gave a different return value"
    )


def test_time_budget_and_site_filter():
    trace = warm_and_trace(overwritten_unread)
    spent = verify(overwritten_unread, trace, budget_s=0.0)
    v = site_result(spent, line("overwritten"))
    assert (v.status, v.detail) == ("not-testable", "not run: the time budget of 0 s was spent on earlier sites")
    assert verify(overwritten_unread, trace, sites=["*nothing.py:1"]).sites == ()
    assert len(verify(overwritten_unread, trace, sites=[f"*{HERE.name}:{line('overwritten')}"]).sites) == 1


def test_verification_is_written_on_each_copy_of_the_site_and_in_the_notes():
    result = verify(overwritten_unread, warm_and_trace(overwritten_unread))
    (c,) = result.trace.read_copies()
    assert c.verification is not None and c.verification.status == "verified"
    assert result.note == (
        "copyhunt verify: 1 site(s) re-run with their eliminable copies elided, on this input: 1 verified, "
        "0 refuted, 0 not testable; every run started from seed 0"
    )


@pytest.mark.parametrize("grad", ["no_grad", "inference_mode"])
def test_inference_tensors_and_grad_modes(grad):
    ctx = torch.no_grad if grad == "no_grad" else torch.inference_mode

    def program():
        with ctx():
            return fresh_into_buffer()

    trace = warm_and_trace(program)
    assert site_result(verify(program, trace), line("fresh")).status == "verified"


def test_round_trip_back_into_the_original_skips_the_copy():
    from copyhunt.verify.plan import plan_sites

    trace = warm_and_trace(there_and_back)
    (plan,) = plan_sites(trace)
    assert [(i.how, i.copy) for i in plan.intents] == [("back-skip", trace.copies[1].seq)]


def round_trip_new():
    h = Y.to(torch.float64)
    back = h.to(torch.float32)  # mark: back-new
    return back + 1


def round_trip_changed():
    y = torch.arange(4.0)
    h = y.to(torch.float64)
    y.add_(1)
    back = h.to(torch.float32)  # mark: back-changed
    return back * 2  # mark: back-reader


def test_round_trip_into_a_new_buffer_returns_the_original():
    # The rules call it fresh-temporary first (a copy of a copy); forced to round-trip, the re-run
    # returns the original float32 tensor instead of the copy back.
    trace = force(warm_and_trace(round_trip_new), "round-trip", line("back-new"))
    assert site_result(verify(round_trip_new, trace), line("back-new")).status == "verified"
    # The original changed in between: "use the original" is wrong, and the reader sees it.
    trace = force(warm_and_trace(round_trip_changed), "round-trip", line("back-changed"))
    v = site_result(verify(round_trip_changed, trace), line("back-changed"))
    assert v.status == "refuted" and v.detail.endswith(f"aten.mul.Tensor ({HERE.name}:{line('back-reader')})")




@pytest.mark.gpu
def test_moe_demo_on_the_gpu_is_verified():
    # The bundled MoE baseline on CUDA (pure-torch backend, tiny preset): op numbering with device tensors,
    # fingerprints read back to the host, both copy sites verified with every op's outputs compared.
    from copyhunt_moe import demo

    def step():
        return demo.baseline(device="cuda", preset="tiny", backend="torch", layers=2)

    result = verify(step, warm_and_trace(step), kind="script")
    assert result.deterministic
    assert [(len(r.plan.copies), r.verification.status) for r in result.sites] == [(2, "verified"), (2, "verified")]
