"""Proof by re-execution: re-run a program once per site with that site's eliminable copies elided,
and compare what the program produces with an untouched run, bit for bit (issue 11).

Runs, each from the same random seeds (torch, ``random``, numpy when loaded):
1. a warm-up (caches, lazy builds: the first run of a process may differ from the next);
2. the traced run (``copyhunt.hunt``), judged: its verdicts are what is tested;
3. two untouched re-runs under the replay mode; they must agree with each other (else the program is
   not deterministic and nothing is tested) and with the traced op sequence;
4. one re-run per site, with its copies elided (``plan.py``, ``elide.py``).

What is compared: for a function, its return value (every tensor's dtype, shape and bytes) and what
it printed; for a script or module, what it printed and every op's outputs (matched by op number;
the elided copies' own outputs excepted). A site is "verified" (on this input), "refuted" (with the
first op whose outputs differ, or the error the program raised), or "not testable" (with why).
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from copyhunt import selection
from copyhunt.analysis import ensure_judged
from copyhunt.records import Trace, Verification
from copyhunt.verify.elide import Untestable, hooks_for
from copyhunt.verify.plan import SitePlan, plan_sites
from copyhunt.verify.replay import Elision, Infeasible, OffTrack, Replay, ReplayMode, fingerprint

#: The seed every run starts from.
SEED = 0

Program = Callable[[], Any]
Progress = Callable[[int, int, str], None]  # (sites done, sites to run, site key)


@dataclass(frozen=True)
class RunRecord:
    """What one run produced: op names and output fingerprints by op number, and its observables."""

    names: list[str]
    prints: list[bytes]
    returned: bytes  # fingerprint of the return value
    printed: str  # what the program wrote to stdout
    error: str | None = None  # the program's exception, one line
    failed_at: int | None = None  # the op running (or last run) when it raised
    off_track: OffTrack | None = None
    elision: str | None = None  # a hook could not do its job: the site is not testable
    infeasible: str | None = None  # the suggested change cannot be written (the producer's out= raised)


@dataclass(frozen=True)
class SiteResult:
    """The verdict of one site's re-run."""

    plan: SitePlan
    verification: Verification
    seconds: float


@dataclass(frozen=True)
class VerifyResult:
    """Everything a verification found: the trace with each tested copy's status, and per site."""

    trace: Trace
    sites: tuple[SiteResult, ...]
    deterministic: bool
    note: str  # one line for the trace's notes


def seed_all(seed: int = SEED) -> None:
    """Seed every generator a program may draw from (torch, random, numpy when loaded)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed)


def run_once(program: Program, replay: Replay | None = None) -> tuple[Any, str]:
    """Run ``program`` from the seeds with stdout captured (under the replay mode when given)."""
    out = io.StringIO()
    seed_all()
    with contextlib.redirect_stdout(out):
        if replay is None:
            value = program()
        else:
            with ReplayMode(replay):
                value = program()
    return value, out.getvalue()


def warm_and_trace(program: Program, *, focus: Sequence[str] = (), hide: Sequence[str] = ()) -> Trace:
    """Run ``program`` once to warm it up, then once under ``copyhunt.hunt``; return the judged trace.

    The program's exceptions propagate. Its result is held until the hunt has stopped (it is alive).
    """
    from copyhunt.analysis import judge
    from copyhunt.hunting import hunt

    run_once(program)
    seed_all()
    with contextlib.redirect_stdout(io.StringIO()), hunt(focus=tuple(focus), hide=tuple(hide)) as h:
        value = program()
    del value
    assert h.trace is not None
    return judge(h.trace)


def replay_run(program: Program, replay: Replay) -> RunRecord:
    """One run under the replay mode; the program's own exceptions are recorded, never raised."""
    error = elision = infeasible = None
    off: OffTrack | None = None
    failed_at = None
    value: Any = None
    printed = ""
    try:
        value, printed = run_once(program, replay)
    except OffTrack as exc:
        off = exc
    except Elision as exc:
        elision = str(exc)
    except Infeasible as exc:
        infeasible = str(exc)
        failed_at = replay.seq - 1 if replay.seq else None
    except Untestable as exc:
        elision = str(exc)
    except Exception as exc:  # noqa: BLE001 - the elided program failing is a finding, not our error
        text = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
        failed_at = replay.seq - 1 if replay.seq else None
    returned = fingerprint(value)
    del value
    replay.held.clear()
    return RunRecord(replay.names, replay.prints, returned, printed, error, failed_at, off, elision, infeasible)


def site_matches(plan: SitePlan, patterns: Sequence[str]) -> bool:
    """True when the site's file (as tables show it, or absolute) or ``file:line`` matches one of the
    globs, the way ``--site`` selects copies (``copyhunt.selection``)."""
    return any(selection.site_matches(plan.site, p) for p in patterns)


def verify(
    program: Program,
    trace: Trace,
    *,
    kind: str = "function",
    sites: Sequence[str] = (),
    budget_s: float | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Re-run ``program`` (already warmed up and traced into the judged ``trace``) once per site.

    ``kind`` is "function" (its return value is compared) or "script" (every op's outputs are);
    ``sites`` are globs on ``file:line`` (none: every site); ``budget_s`` bounds the time spent on site
    re-runs (the sites left get "not testable"). The program's exceptions in the untouched re-runs
    propagate (the program itself fails).
    """
    if kind not in ("function", "script"):
        raise ValueError(f"kind must be 'function' or 'script', got {kind!r}")
    trace = ensure_judged(trace)
    plans = [p for p in plan_sites(trace) if not sites or site_matches(p, sites)]
    observe = frozenset(s for p in plans for s in p.seqs)
    probe = Replay(observe=observe, track=True)
    value, printed = run_once(program, probe)
    ref = RunRecord(probe.names, probe.prints, fingerprint(value), printed)
    del value
    again = replay_run(program, Replay())
    names = [o.op for o in sorted(trace.ops, key=lambda o: o.seq)]
    problem = _reference_problem(names, ref, again)
    results: list[SiteResult] = []
    started = time.perf_counter()
    unstable = {k for k, (a, b) in enumerate(zip(ref.prints, again.prints)) if a != b}
    for n, plan in enumerate(plans):
        if progress is not None:
            progress(n, len(plans), plan.key)
        t0 = time.perf_counter()
        if problem is not None:
            v = Verification("not-testable", problem)
        elif plan.untestable is not None:
            v = Verification("not-testable", plan.untestable)
        elif budget_s is not None and t0 - started > budget_s:
            v = Verification("not-testable", f"not run: the time budget of {budget_s:g} s was spent on earlier sites")
        else:
            v, aborted = _test_site(program, plan, probe, ref, names, unstable, kind, trace)
            if aborted:
                # A run cut short may leave the program's state half-changed (a workspace never
                # released): the rest is tested only if an untouched run still matches the reference.
                check = replay_run(program, Replay())
                if check.error is not None or check.names != ref.names or check.returned != ref.returned:
                    problem = f"an untouched run after {plan.key}'s re-run no longer matches the first: the program keeps state across runs"
        results.append(SiteResult(plan, v, time.perf_counter() - t0))
    if progress is not None:
        progress(len(plans), len(plans), "")
    return VerifyResult(_with_verifications(trace, results), tuple(results), problem is None, _note(results, problem))


def _reference_problem(names: list[str], ref: RunRecord, again: RunRecord) -> str | None:
    """Why no site can be tested (the untouched re-runs disagree, or differ from the trace), or None."""
    if again.error is not None:
        return f"the second untouched re-run raised {again.error}"
    if ref.names != again.names:
        k = _first_difference(ref.names, again.names)
        return f"the program is not deterministic: two untouched re-runs ran different ops from op #{k}"
    if ref.returned != again.returned or ref.printed != again.printed:
        what = "return value" if ref.returned != again.returned else "printed output"
        return f"the program is not deterministic: two untouched re-runs gave a different {what}"
    if ref.names != names:
        k = _first_difference(ref.names, names)
        traced = names[k] if k < len(names) else "nothing"
        rerun = ref.names[k] if k < len(ref.names) else "nothing"
        return f"the re-run did not replay the traced run: op #{k} was {traced} when traced, {rerun} re-run"
    return None


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _test_site(program: Program, plan: SitePlan, probe: Replay, ref: RunRecord, names: list[str],
               unstable: set[int], kind: str, trace: Trace) -> tuple[Verification, bool]:
    """The site's verification, and whether its run was cut short (an exception or another path)."""
    try:
        hooks = hooks_for(plan, probe.seen, names)
    except Untestable as exc:
        return Verification("not-testable", str(exc)), False
    run = replay_run(program, Replay(hooks=hooks))
    aborted = run.error is not None or run.off_track is not None or run.elision is not None or run.infeasible is not None
    if run.elision is not None:
        return Verification("not-testable", f"the re-run could not elide it: {run.elision}"), aborted
    skip = {i.copy for i in plan.intents}
    div = _divergence(ref, run, skip | unstable)
    where = _op_text(trace, div) if div is not None else None
    if div is not None and div < len(run.names) and div < len(ref.names) and run.names[div] != ref.names[div]:
        # Another op ran: the program took another path (a reshape that now copies, a branch on a value).
        where = f"{where}, which ran {run.names[div]} where the untouched run ran {ref.names[div]}"
    if div is not None and div < min(hooks):
        # Nothing was elided yet: the difference is not this site's doing.
        return Verification("not-testable", f"the re-run differs from the untouched one at {where}, before the first elided op "
                            "(state left by an earlier run?)"), aborted
    return _classify(run, div, where, skip | unstable, ref, kind, trace), aborted


def _classify(run: RunRecord, div: int | None, where: str | None, skip: set[int], ref: RunRecord, kind: str,
              trace: Trace) -> Verification:
    if run.infeasible is not None:
        at = f" (at {_op_text(trace, run.failed_at)})" if run.failed_at is not None else ""
        return Verification("refuted", f"the suggested change cannot be written as is: {run.infeasible}{at}", run.failed_at)
    if run.error is not None:
        at = f" at {_op_text(trace, run.failed_at)}" if run.failed_at is not None else ""
        return Verification("refuted", f"the program raised {run.error}{at}", run.failed_at)
    if run.off_track is not None:
        first = div if div is not None else run.off_track.seq
        text = where if div is not None else f"{_op_text(trace, first)}, which ran {run.off_track.got}"
        return Verification("refuted", f"the program took another path: first diverging op {text}", first)
    if div is not None and (div >= min(len(run.names), len(ref.names)) or run.names[div] != ref.names[div]):
        # Same results or not, the elided program runs other ops: the copy moved (or work changed).
        return Verification("refuted", f"the program took another path: first diverging op {where}", div)
    same = run.returned == ref.returned and run.printed == ref.printed
    if kind == "function":
        if same:
            extra = ""
            if div is not None:
                n = sum(1 for k in range(min(len(ref.prints), len(run.prints))) if k not in skip and ref.prints[k] != run.prints[k])
                extra = f"; {n} op output(s) in between differed, first {where}"
            return Verification("verified", f"identical return value and printed output on this input{extra}", div)
        what = "return value" if run.returned != ref.returned else "printed output"
        return Verification("refuted", f"the {what} differs; first diverging op {where}" if where else f"the {what} differs", div)
    if same and div is None:
        return Verification("verified", "identical outputs of every later op and identical printed output on this input")
    if div is not None:
        return Verification("refuted", f"first diverging op {where}", div)
    return Verification("refuted", "the printed output differs")


def _divergence(ref: RunRecord, run: RunRecord, skip: set[int]) -> int | None:
    """The first op (not skipped) whose name or output fingerprint differs between the two runs."""
    n = min(len(ref.names), len(run.names))
    for k in range(n):
        if ref.names[k] != run.names[k]:
            return k
        # An aborted run named the op it died in but has no fingerprint for it.
        if k not in skip and (k >= len(run.prints) or k >= len(ref.prints) or ref.prints[k] != run.prints[k]):
            return k
    return n if len(ref.names) != len(run.names) else None


def _op_text(trace: Trace, seq: int | None) -> str:
    """``#12 aten.mul.Tensor (model.py:40)``, from the trace's op records."""
    if seq is None:
        return "(unknown op)"
    op = next((o for o in trace.ops if o.seq == seq), None)
    if op is None:
        return f"#{seq}"
    where = f" ({op.site.file.rsplit('/', 1)[-1]}:{op.site.line})" if op.site is not None else ""
    return f"#{seq} {op.op}{where}"


def _with_verifications(trace: Trace, results: list[SiteResult]) -> Trace:
    """The trace with each re-run copy's verification beside it, by copy position (others: none)."""
    found = dict(trace.verifications)
    for r in results:
        for c in r.plan.copies:
            found[c.key] = r.verification
    return replace(trace, verifications=found)


def _note(results: list[SiteResult], problem: str | None) -> str:
    counts = {s: sum(1 for r in results if r.verification.status == s) for s in ("verified", "refuted", "not-testable")}
    line = (f"copyhunt verify: {len(results)} site(s) re-run with their eliminable copies elided, on this input: "
            f"{counts['verified']} verified, {counts['refuted']} refuted, {counts['not-testable']} not testable; "
            f"every run started from seed {SEED}")
    if problem is not None:
        line += f" ({problem})"
    return line
