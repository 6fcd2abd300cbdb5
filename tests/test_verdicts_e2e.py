"""Verdicts on tiny real CPU workloads traced with copyhunt.hunt(): one positive per verdict, and
the needed cases the issue lists. float32 tensors of 4 elements (16 B) unless a test says otherwise.

Inputs are made before the hunt and results are kept referenced after it, as a caller would: a
storage still alive when the hunt ends may be read later, so the rules never count it as dead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import copyhunt
from copyhunt.analysis import eliminable_summary, judge
from copyhunt.records import Copy
from copyhunt.view import TraceView, view

HERE = Path(__file__)
_SOURCE = HERE.read_text().splitlines()


def line(mark: str) -> int:
    """The line of this file that carries ``# mark: <mark>``."""
    hits = [i + 1 for i, text in enumerate(_SOURCE) if re.search(rf"# mark: {re.escape(mark)}$", text)]
    assert len(hits) == 1, f"marker {mark!r} found {len(hits)} times"
    return hits[0]


def at(mark: str) -> str:
    """How reasons name a line of this file: ``test_verdicts_e2e.py:<line>``."""
    return f"{HERE.name}:{line(mark)}"


def hunt(fn, *args) -> tuple[TraceView, object]:
    """Trace ``fn(*args)``, judge the trace; also return fn's result (kept alive past the hunt)."""
    with copyhunt.hunt() as h:
        result = fn(*args)
    return view(judge(h.trace)), result


def death(judged: TraceView, storage: int) -> str:
    """How reasons describe the recorded death of ``storage``: freed before an op, or at the end."""
    freed = [o for o in judged.trace.ops if storage in o.frees]
    if freed:  # named by the op (and line) that ran next, as the reader sees it
        op = freed[0]
        name = op.op.removeprefix("aten.").split(".")[0]
        return f"freed (before aten.{name} at {os.path.basename(op.site.file)}:{op.site.line})"
    (info,) = [s for s in judged.trace.storages if s.id == storage]
    assert not info.alive_at_end
    return "dead when the hunt ended"


def only(judged: TraceView) -> Copy:
    (c,) = judged.copies
    return c


# --- the workloads (each copy on its own marked line) ---------------------------------------------


def self_copy(x):
    x.copy_(x)  # mark: noop


def overwritten(x):
    buf = torch.empty(4)  # mark: dead-out
    buf.copy_(x)  # mark: dead-copy
    buf.fill_(0)  # mark: dead-fill
    return buf.sum()


def fresh_into(a, out):
    out.copy_(a + a)  # mark: fresh
    return out * 2  # mark: fresh-next


def defensive(x):
    y = x.clone()  # mark: clone
    return y * 2


def empty_like_then_copy(a):
    y = a + a  # mark: empty-like-producer
    out = torch.empty_like(y)  # reads only y's shape and dtype, not its data
    out.copy_(y)  # mark: empty-like-copy
    return out


def contiguous_then_cast(m):
    t = m.t().contiguous()  # mark: contiguous
    return t.to(torch.float64)  # mark: cast


def part_of_clone(x):
    full = x.clone()  # mark: full
    return full[:2].to(torch.float64)  # mark: part


def there_and_back(y):
    h = y.to(torch.float64)  # mark: out
    z = h * 1
    y.copy_(h)  # mark: back
    return z


def source_reused(a, out):
    t = a * 2
    out.copy_(t)  # mark: reused
    return t + 1


def into_read_buffer(x, buf):
    buf.copy_(x)  # mark: read-later
    return buf.sum()


def preserve(y):
    saved = y.clone()  # mark: saved
    y.add_(1)
    return saved + y


# --- positives -----------------------------------------------------------------------------------


def test_noop():
    x = torch.arange(4.0)
    trace, _ = hunt(self_copy, x)
    c = only(trace)
    assert (c.verdict, c.bytes, c.site.line) == ("noop", 16, line("noop"))
    assert c.reason == "source and destination are the same storage and layout: PyTorch does no work"


def test_dead_store():
    x = torch.arange(4.0)
    trace, _ = hunt(overwritten, x)
    c = only(trace)
    assert (c.verdict, c.bytes, c.site.line) == ("dead-store", 16, line("dead-copy"))
    assert c.reason == (
        f"the destination (a 16 B buffer made by aten.empty.memory_format at {at('dead-out')}) is overwritten by aten.fill_.Scalar at {at('dead-fill')} "
        "before anything reads it"
    )


def test_fresh_temporary():
    a, out = torch.arange(4.0), torch.empty(4)
    trace, _ = hunt(fresh_into, a, out)
    c = only(trace)
    assert (c.verdict, c.bytes, c.site.line) == ("fresh-temporary", 16, line("fresh"))
    # The temporary a + a dies when copy_ returns. The capture notices a death at its next check
    # (before some later op, or in the final sweep): the reason names whichever it recorded.
    assert c.reason == (
        f"source (a fresh 16 B buffer made by aten.add.Tensor at {at('fresh')}) "
        f"is read only by this copy, then {death(trace, c.src_storage)}"
    )
    assert c.suggestion == (
        f"let aten.add.Tensor at {at('fresh')} write straight into this copy's destination "
        "(destination passing: out=/output= or an in-place variant), then drop this copy"
    )


def test_empty_like_is_no_read_of_its_argument():
    # out = empty_like(y); out.copy_(y): empty_like takes y's metadata only, so y (a fresh 16 B
    # temporary) is read by the copy alone and the copy is a fresh temporary.
    trace, _ = hunt(empty_like_then_copy, torch.arange(4.0))
    c = only(trace)
    assert (c.verdict, c.bytes, c.site.line) == ("fresh-temporary", 16, line("empty-like-copy"))
    (empty,) = [o for o in trace.trace.ops if o.op == "aten.empty_like.default"]
    assert empty.reads == () and [a.storage for a in empty.writes] == [c.dst_storage]
    assert c.reason.startswith(f"source (a fresh 16 B buffer made by aten.add.Tensor at {at('empty-like-producer')})")


def test_defensive_clone():
    x = torch.arange(4.0)
    trace, _ = hunt(defensive, x)
    c = only(trace)
    assert (c.verdict, c.op, c.site.line) == ("defensive-clone", "aten.clone.default", line("clone"))
    assert c.reason == (f"neither the source (the buffer made before the hunt, first used by aten.clone at {at('clone')}) "
                        "nor this copy is written until it dies: an alias would do")
    assert c.suggestion == "use the source (or a view of it) instead of the copy"


def test_contiguous_then_cast_is_a_fresh_temporary_and_chained():
    m = torch.arange(6.0).view(2, 3)  # 6 float32 = 24 B; the float64 result is 48 B
    trace, _ = hunt(contiguous_then_cast, m)
    clone, cast = trace.copies
    # The clone makes m.t() contiguous; whether .to() needs that layout is not in the trace: not proven.
    assert (clone.op, clone.bytes, clone.verdict) == ("aten.clone.default", 24, "needed")
    assert clone.suggestion == "keep it, unless its consumer takes a strided tensor: then use the source itself"
    assert (cast.op, cast.bytes, cast.site.line) == ("aten._to_copy.default", 48, line("cast"))
    assert [f.verdict for f in cast.findings] == ["fresh-temporary", "chained"]
    assert cast.suggestion.endswith("; that producer is itself a copy, so one op would do")
    assert cast.findings[1].reason == (
        f"copies a 24 B buffer, which aten.clone at {at('contiguous')} had just copied "
        f"from the buffer made before the hunt, first used by aten.clone at {at('contiguous')}; nothing else reads it"
    )


def test_chained():
    x = torch.arange(4.0)
    trace, _ = hunt(part_of_clone, x)
    full, part = trace.copies
    # full[:2] reads 8 of the clone's 16 B, so the clone did not make exactly this value: only "chained".
    assert (part.verdict, part.bytes, part.site.line) == ("chained", 16, line("part"))
    assert [f.verdict for f in part.findings] == ["chained"]
    assert part.reason == (
        f"copies 8 B of a 16 B buffer, which aten.clone at {at('full')} had just copied "
        f"from the buffer made before the hunt, first used by aten.clone at {at('full')}; nothing else reads it"
    )
    assert full.verdict == "defensive-clone"


def test_round_trip():
    y = torch.arange(4.0)
    trace, _ = hunt(there_and_back, y)
    out, back = trace.copies
    # float32 -> float64 -> float32 is exact, and y did not change in between.
    assert (out.verdict, back.verdict, back.site.line) == ("needed", "round-trip", line("back"))
    assert back.reason == (
        f"writes back into the buffer made before the hunt, first used by aten._to_copy at {at('out')} the values aten._to_copy at {at('out')} copied out of it; "
        "neither side changed since"
    )
    assert back.suggestion == "drop this copy: the destination already holds these values"


# --- needed: the cases the issue lists -----------------------------------------------------------


def test_needed_source_read_again_later():
    a, out = torch.arange(4.0), torch.empty(4)
    trace, _ = hunt(source_reused, a, out)
    c = only(trace)
    assert (c.verdict, c.reason, c.site.line) == ("needed", "none of the rules applied", line("reused"))


def test_needed_copy_into_a_buffer_read_later():
    x, buf = torch.arange(4.0), torch.empty(4)
    trace, _ = hunt(into_read_buffer, x, buf)
    assert (only(trace).verdict, only(trace).site.line) == ("needed", line("read-later"))


def test_needed_copy_that_preserves_a_value_before_the_source_is_mutated():
    y = torch.arange(4.0)
    trace, _ = hunt(preserve, y)
    assert (only(trace).verdict, only(trace).site.line) == ("needed", line("saved"))


@pytest.mark.gpu
def test_needed_cross_device_copies_of_fresh_temporaries():
    a = torch.arange(4.0)
    with copyhunt.hunt() as h:
        d = (a * 2).cuda()  # h2d of a host temporary
        back = (d * 2).cpu()  # d2h of a device temporary
    assert [(c.kind, c.verdict) for c in h.copies] == [("h2d", "needed"), ("d2h", "needed")]
    assert back.sum().item() == 24.0  # (0+1+2+3) * 4


# --- whole-trace properties ----------------------------------------------------------------------


def test_same_verdicts_inside_inference_mode():
    m = torch.arange(6.0).view(2, 3)
    normal, _ = hunt(contiguous_then_cast, m)
    with torch.inference_mode():
        m_inf = torch.arange(6.0).view(2, 3)
        inference, _ = hunt(contiguous_then_cast, m_inf)
    assert [(c.op, c.verdict, c.reason) for c in inference.copies] == [(c.op, c.verdict, c.reason) for c in normal.copies]


def test_summary_of_a_real_trace():
    a, out = torch.arange(4.0), torch.empty(4)
    x = torch.arange(4.0)

    def both():
        fresh_into(a, out)  # 16 B fresh-temporary
        return into_read_buffer(x, out)  # 16 B needed

    trace, _ = hunt(both)
    assert [c.verdict for c in trace.copies] == ["fresh-temporary", "needed"]
    assert eliminable_summary(trace).line() == "1 of 2 copies, 16 B look eliminable"


def doubled_in_place(x):
    x.copy_(x * 2)  # mark: in-place
    return x.sum()


def test_fresh_temporary_in_place():
    x = torch.arange(4.0)
    trace, _ = hunt(doubled_in_place, x)
    c = only(trace)
    assert (c.verdict, c.site.line) == ("fresh-temporary", line("in-place"))
    assert c.suggestion.startswith(f"compute it in place: the in-place variant of aten.mul.Tensor at {at('in-place')} on the destination")
    assert x.tolist() == [0.0, 2.0, 4.0, 6.0]  # the tracer changed nothing the program computed


SCRIPT = """\
import torch

def f(a, out):
    out.copy_(a + a)  # a fresh temporary copied into a buffer that outlives the script's step
    return out * 2

out = torch.empty(4)
r = f(torch.arange(4.0), out)
"""


def test_cli_trace_json_carries_verdict_reason_suggestion(tmp_path, monkeypatch, capsys):
    import json

    from copyhunt.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.py").write_text(SCRIPT)
    assert main(["trace", "s.py", "--json", "-o", "t.json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (copy,) = doc["copies"]
    (finding,) = doc["findings"]  # beside the copies, pointing at copy 0
    assert (finding["copy"], finding["verdict"], copy["site"]["line"]) == (0, "fresh-temporary", 4)
    assert finding["reason"].startswith("source (a fresh 16 B buffer made by aten.add.Tensor at s.py:4)")
    assert finding["suggestion"].startswith("let aten.add.Tensor at s.py:4 write straight into this copy's destination")


def test_an_api_saved_trace_reports_with_verdicts(tmp_path, monkeypatch, capsys):
    # The README's API: hunt, read c.verdict, save h.trace as it is (unjudged), then `copyhunt report`.
    from copyhunt.cli import main

    a, out = torch.arange(4.0), torch.empty(4)
    with copyhunt.hunt() as h:
        fresh_into(a, out)
    assert h.trace.findings is None  # saved as captured...
    assert [(c.verdict, c.site.line) for c in h.copies] == [("fresh-temporary", line("fresh"))]  # ...read judged
    copyhunt.save_trace(h.trace, tmp_path / "t.json")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["report", str(tmp_path / "t.json")]) == 0
    shown = capsys.readouterr().out
    assert "eliminable  1 of 1 copies, 16 B look eliminable" in shown
    assert "fresh-temporary" in shown and "Why they look eliminable:" in shown
