"""The rich table: exact text at fixed widths (golden), device/verdict columns, plain output off a TTY."""

from __future__ import annotations

import io
import textwrap
from typing import Any

from rich.console import Console

from copyhunt.records import Copy, DeviceTiming, Frame, Trace, TraceMeta
from copyhunt.selection import Selection
from copyhunt.view import recorded_selection, view
from factories import copy, trace
from copyhunt.report.table import render_table
from copyhunt.text import display_path, human_bytes, percent, short_op

CWD = "/home/u/proj"
MOE = Frame(f"{CWD}/model/moe.py", 120, "forward")
FIN = Frame(f"{CWD}/model/finalize.py", 48, "finalize_output_buffer")
LIB = Frame("/opt/lib/x.py", 9, "f")
MIB = 1024 * 1024


def cp(seq: int, nbytes: int, site: Frame | None, **kw: Any) -> Copy:
    return copy(seq, nbytes, site=site, **{"shape": (nbytes // 2,), "dtype": "torch.bfloat16", **kw})


def judged_trace() -> Trace:
    """5 copies: 2 x 6 MiB at two sites, a 3000-byte h2d without a site, a clone and a noop copy at LIB."""
    copies = (
        cp(1, 6 * MIB, MOE, verdict="fresh-temporary", reason="result made by aten.mm at model/moe.py:118 is only read by this copy",
           suggestion="let the experts backend write into the destination (output=)"),
        cp(2, 6 * MIB, FIN, verdict="needed", reason="none of the rules applied"),
        cp(3, 512, LIB, op="aten.clone.default", verdict="needed"),
        cp(4, 512, LIB, noop=True, verdict="noop", reason="same storage and layout", suggestion="drop the call"),
        cp(5, 3000, None, op="aten._to_copy.default", kind="h2d", src_device="cpu", dst_device="cuda:0", verdict="needed"),
    )
    meta = TraceMeta(device="cpu", torch_version="2.13.0", target="demo.py", argv=("demo.py", "--layers", "2"),
                     complete=False, error="ValueError: boom", notes=("a note for the reader",))
    return trace(*copies, meta=meta)


def timed_trace() -> Trace:
    """Two sites with device time (GPU total 200 us), no verdicts."""
    copies = (
        cp(1, 2 * MIB, MOE, timing=DeviceTiming("Memcpy DtoD (Device -> Device)", 10.0, 2 * MIB)),
        cp(2, 2 * MIB, MOE, timing=DeviceTiming("Memcpy DtoD (Device -> Device)", 12.0, 2 * MIB)),
        cp(3, 1 * MIB, FIN),
    )
    meta = TraceMeta(device="cuda:0 NVIDIA H100 80GB HBM3", torch_version="2.11.0", target="-m app.serve",
                     gpu_time_us=200.0, view={"kinds": ["d2d"]})
    return trace(*copies, meta=meta)


CASES = {
    "judged": (judged_trace(), dict(trace_path=f"{CWD}/copyhunt-demo.7.json")),
    "timed": (timed_trace(), dict(trace_path="/tmp/t.json")),
}


def render(t: Trace, width: int, selection: Selection | None = None, **kw: Any) -> str:
    console = Console(width=width, no_color=True, force_terminal=False, file=io.StringIO())
    # No selection: the view the trace records, as `copyhunt trace` / `report` show it.
    render_table(view(t, selection if selection is not None else recorded_selection(t)), console, cwd=CWD, **kw)
    # rich pads table cells to the column width; trailing blanks are not part of the contract.
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()) + "\n"


def test_golden_judged_width_100():
    # Totals: 6 MiB + 6 MiB + 512 B (clone) + 3000 B (h2d) = 12 MiB + 3512 B -> "12.0 MiB"; the noop
    # copy's 512 bytes do not count. Eliminable: fresh-temporary (6 MiB) + noop (0 B) = 2 of 5, 6.0 MiB.
    # Equal bytes and count: program order (seq 1 before seq 2).
    # Shares: 6 MiB / (12 MiB + 3512 B) = 49.99% -> "50.0%"; 3000 B = 2.9 KiB -> "0.0%".
    # "needed" is shown as "not proven"; a mixed row counts each verdict's own copies (1 noop, 1 not proven).
    expected = textwrap.dedent(
        """\
        target      demo.py --layers 2
        device      cpu (torch 2.13.0)
        copies      5 copies, 12.0 MiB written (1 noop copy moves 0 bytes)
        eliminable  2 of 5 copies, 6.0 MiB look eliminable
        status      INCOMPLETE: ValueError: boom

        Source site               Op            Kind       Count    Bytes  Share  Verdict
        ──────────────────────────────────────────────────────────────────────────────────────────────
        model/moe.py:120 forward  copy_         d2d            1  6.0 MiB  50.0%  fresh-temporary
        model/finalize.py:48      copy_         d2d            1  6.0 MiB  50.0%  not proven
          finalize_output_buffer
        (no source site)          _to_copy      h2d            1  2.9 KiB   0.0%  not proven
        /opt/lib/x.py:9 f         clone, copy_  d2d   2 (1 noop)    512 B   0.0%  1 noop, 1 not proven

        Why they look eliminable:
        model/moe.py:120 forward
          fresh-temporary (1 copy): result made by aten.mm at model/moe.py:118 is only read by this copy
            -> let the experts backend write into the destination (output=)
        /opt/lib/x.py:9 f
          noop (1 copy): same storage and layout
            -> drop the call

        note: a note for the reader
        trace file: copyhunt-demo.7.json
        """
    )
    assert render_case("judged", 100) == expected


def test_golden_judged_width_60_stacks_rows():
    # At 60 columns the site column would get fewer than 20 characters: one block per row instead.
    expected = textwrap.dedent(
        """\
        target      demo.py --layers 2
        device      cpu (torch 2.13.0)
        copies      5 copies, 12.0 MiB written (1 noop copy moves 0
                    bytes)
        eliminable  2 of 5 copies, 6.0 MiB look eliminable
        status      INCOMPLETE: ValueError: boom

        1. model/moe.py:120 forward
           op copy_  kind d2d  count 1  bytes 6.0 MiB  share 50.0%
           verdict fresh-temporary
        2. model/finalize.py:48 finalize_output_buffer
           op copy_  kind d2d  count 1  bytes 6.0 MiB  share 50.0%
           verdict not proven
        3. (no source site)
           op _to_copy  kind h2d  count 1  bytes 2.9 KiB  share 0.0%
           verdict not proven
        4. /opt/lib/x.py:9 f
           op clone, copy_  kind d2d  count 2 (1 noop)  bytes 512 B
           share 0.0%  verdict 1 noop, 1 not proven

        Why they look eliminable:
        model/moe.py:120 forward
          fresh-temporary (1 copy): result made by aten.mm at
          model/moe.py:118 is only read by this copy
            -> let the experts backend write into the destination
            (output=)
        /opt/lib/x.py:9 f
          noop (1 copy): same storage and layout
            -> drop the call

        note: a note for the reader
        trace file: copyhunt-demo.7.json
        """
    )
    assert render_case("judged", 60) == expected


def test_golden_device_time_columns():
    # moe.py: 10 + 12 = 22 us of 200 us GPU time = 11.0%; 4 MiB of 5 MiB = 80.0%. finalize has no timing.
    expected = textwrap.dedent(
        """\
        target       -m app.serve
        device       cuda:0 NVIDIA H100 80GB HBM3 (torch 2.11.0)
        copies       3 copies, 5.0 MiB written
        device time  22.0 us in copies, 11.0% of 200.0 us GPU time
        filters      kinds=d2d
        status       complete

        Source site                                  Op     Kind  Count    Bytes  Share  Dev us  GPU %
        ──────────────────────────────────────────────────────────────────────────────────────────────
        model/moe.py:120 forward                     copy_  d2d       2  4.0 MiB  80.0%    22.0  11.0%
        model/finalize.py:48 finalize_output_buffer  copy_  d2d       1  1.0 MiB  20.0%       -      -

        trace file: /tmp/t.json
        """
    )
    assert render_case("timed", 100) == expected


def render_case(name: str, width: int) -> str:
    trace, kw = CASES[name]
    return render(trace, width, **kw)


def test_top_hides_the_rest_and_says_so():
    copies = tuple(cp(i, (10 - i) * 1024, Frame(f"{CWD}/m.py", i, "f")) for i in range(1, 6))
    out = render(trace(*copies, meta=TraceMeta(target="t.py")), 100, top=2)
    # Rows for lines 1 (9 KiB) and 2 (8 KiB) shown; lines 3..5 hidden: 7 + 6 + 5 = 18 KiB in 3 copies.
    assert "m.py:1 f" in out and "m.py:2 f" in out and "m.py:3 f" not in out
    assert "... 3 more source sites: 3 copies, 18.0 KiB (--top 0 shows all)\n" in out
    assert "m.py:5 f" in render(trace(*copies, meta=TraceMeta(target="t.py")), 100, top=0)


def test_group_by_module_and_display_filters():
    copies = (
        cp(1, 4096, MOE, module="layers.0.moe", region="decode/moe"),
        cp(2, 2048, FIN, module="layers.0.moe", region="decode"),
        cp(3, 1024, FIN, module="layers.1.moe", kind="h2d", region="prefill"),
    )
    t = trace(*copies, meta=TraceMeta(target="t.py"))
    out = render(t, 100, by="module")
    assert "Module " in out
    # layers.0.moe: 4096 + 2048 = 6.0 KiB of 7.0 KiB = 85.7%.
    assert "layers.0.moe" in out and "6.0 KiB  85.7%" in out
    shown = render(t, 100, selection=Selection(kinds=("d2d",), region="decode"))
    # Only seq 1 and 2 match; totals are over what is shown: 6.0 KiB.
    assert "copies   2 copies, 6.0 KiB written" in shown
    assert "filters  showing kind=d2d, region=decode" in shown
    assert "No copies match the filters." in render(t, 100, selection=Selection(region="nowhere"))


def test_empty_trace():
    out = render(trace(meta=TraceMeta(target="t.py")), 80, trace_path="x.json")
    assert "copies  0 copies, 0 B written" in out
    assert "status  complete\n\nNo copies recorded.\n" in out
    assert out.endswith("\ntrace file: x.json\n")


def test_no_ansi_when_piped_or_no_color():
    shown = view(judged_trace())
    piped = Console(width=80, file=io.StringIO())  # a StringIO is not a terminal
    render_table(shown, piped, cwd=CWD)
    assert "\x1b[" not in piped.file.getvalue()
    no_color = Console(width=80, file=io.StringIO(), force_terminal=True, no_color=True)
    render_table(shown, no_color, cwd=CWD)
    assert "\x1b[3" not in no_color.file.getvalue()  # no colour codes (bold may remain, as NO_COLOR allows)
    colour = Console(width=80, file=io.StringIO(), force_terminal=True, color_system="standard")
    render_table(shown, colour, cwd=CWD)
    assert "\x1b[" in colour.file.getvalue()  # the check above can fail: a terminal does get colour


def test_units():
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1024) == "1.0 KiB"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(6 * 1024 * 1024) == "6.0 MiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
    assert human_bytes(2 * 1024**5) == "2048.0 TiB"
    assert percent(1, 3) == "33.3%"
    assert percent(1, 0) == percent(1, None) == "-"
    assert short_op("aten.copy_.default") == "copy_"
    assert short_op("aten.cat.out") == "cat.out"
    assert short_op("aten::copy_") == "copy_"  # op names imported from torch.profiler files
    assert short_op("Memcpy DtoD") == "Memcpy DtoD"
    assert display_path("/home/u/proj/a/b.py", "/home/u/proj") == "a/b.py"
    assert display_path("/elsewhere/b.py", "/home/u/proj") == "/elsewhere/b.py"
    assert display_path("rel/b.py", "/home/u/proj") == "rel/b.py"


def test_paths_outside_cwd_show_their_import_path(tmp_path):
    # A file of an installed package, seen from an unrelated folder, is named by its import path.
    import os

    import copyhunt_moe

    moe = os.path.join(os.path.dirname(os.path.abspath(copyhunt_moe.__file__)), "modular.py")
    assert display_path(moe, str(tmp_path)) == os.path.join("copyhunt_moe", "modular.py")
    # A path recorded on another machine: the part after site-packages/.
    assert display_path("/opt/venv/lib/python3.12/site-packages/vllm/layer.py", str(tmp_path)) == "vllm/layer.py"
    # Below the current folder, the path stays relative to it; elsewhere an unknown path stays absolute.
    assert display_path(str(tmp_path / "a" / "b.py"), str(tmp_path)) == os.path.join("a", "b.py")
    assert display_path("/nowhere/x.py", str(tmp_path)) == "/nowhere/x.py"


def verified_trace() -> Trace:
    """moe.py:120: 2 dead stores (two layers) and a fresh temporary, verified; finalize.py:48: a fresh
    temporary refuted and a copy not proven eliminable. 1 KiB each."""
    from copyhunt.records import Verification

    ok = Verification("verified", "identical return value and printed output on this input")
    bad = Verification("refuted", "the return value differs; first diverging op #7 aten.mul.Tensor (finalize.py:50)", 7)
    dead = dict(verdict="dead-store", reason="the destination is freed before anything reads it", suggestion="drop the copy")
    fresh = dict(verdict="fresh-temporary", reason="source made by aten.mm is read only by this copy", suggestion="let aten.mm write it")
    copies = (
        cp(1, 1024, MOE, module="layers.0", verification=ok, **dead),
        cp(2, 1024, MOE, module="layers.1", verification=ok, **dead),
        cp(3, 1024, MOE, module="layers.1", verification=ok, **fresh),
        cp(4, 1024, FIN, module="layers.1", verification=bad, **fresh),
        cp(5, 1024, FIN, module="layers.1", verdict="needed", reason="none of the rules applied"),
    )
    return trace(*copies, meta=TraceMeta(device="cpu", torch_version="2.13.0", target="m:f", argv=("m:f",)))


def test_verified_trace_shows_the_proof_per_row_and_per_site():
    # 4 eliminable copies: 3 verified (moe.py), 1 refuted (finalize.py). The dead stores and the fresh
    # temporary at moe.py:120 are listed once per verdict under their one site.
    expected = textwrap.dedent(
        """\
        target      m:f
        device      cpu (torch 2.13.0)
        copies      5 copies, 5.0 KiB written
        eliminable  4 of 5 copies, 4.0 KiB look eliminable
        proof       4 eliminable copies re-run: 3 verified, 1 refuted, 0 not testable (on this input)
        status      complete

        Source site            Op     Kind  Count    Bytes  Share  Verdict                          Proof
        ────────────────────────────────────────────────────────────────────────────────────────────────────
        model/moe.py:120       copy_  d2d       3  3.0 KiB  60.0%  2 dead-store, 1 fresh-temporary  verified
          forward
        model/finalize.py:48   copy_  d2d       2  2.0 KiB  40.0%  1 fresh-temporary, 1 not proven  refuted
          finalize_output_buf
          fer

        Why they look eliminable:
        model/moe.py:120 forward
          dead-store (2 copies): the destination is freed before anything reads it
            -> drop the copy
          fresh-temporary (1 copy): source made by aten.mm is read only by this copy
            -> let aten.mm write it
          proof: verified: identical return value and printed output on this input
        model/finalize.py:48 finalize_output_buffer
          fresh-temporary (1 copy): source made by aten.mm is read only by this copy
            -> let aten.mm write it
          proof: refuted: the return value differs; first diverging op #7 aten.mul.Tensor (finalize.py:50)
        """
    )
    assert render(verified_trace(), 100) == expected


def test_site_shared_by_two_modules_is_explained_once():
    out = render(verified_trace(), 120, by="module")
    assert out.count("model/moe.py:120 forward\n") == 1
    assert out.count("dead-store (2 copies)") == 1
