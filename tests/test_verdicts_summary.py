"""eliminable_summary: exact counts, bytes, device time and the summary line."""

from __future__ import annotations

from copyhunt.analysis import EliminableSummary, eliminable_summary
from copyhunt.analysis.summary import VerdictTotal
from copyhunt.records import Copy
from copyhunt.view import view
from factories import copy, trace


def _copy(seq: int, nbytes: int, verdict: str | None, *, noop: bool = False, us: float | None = None) -> Copy:
    return copy(seq, nbytes, verdict=verdict, noop=noop, us=us)


def test_summary_counts_bytes_and_device_time():
    judged = view(trace(
        _copy(0, 1024, "noop", noop=True, us=0.5),  # counted, moves 0 bytes
        _copy(1, 2048, "fresh-temporary", us=2.0),
        _copy(2, 1024 * 1024, "fresh-temporary", us=10.0),
        _copy(3, 4096, "needed", us=3.0),
        _copy(4, 512, "dead-store"),  # no device timing for this one
    ))
    s = eliminable_summary(judged)
    # eliminable: seq 0, 1, 2, 4 -> bytes 0 + 2048 + 1048576 + 512 = 1051136; us 0.5 + 2.0 + 10.0 = 12.5
    assert s == EliminableSummary(
        copies=4, total_copies=5, bytes=1051136, total_bytes=1051136 + 4096, device_us=12.5,
        total_device_us=15.5, judged=True,
        by_verdict=(
            VerdictTotal("noop", 1, 0, 0.5),
            VerdictTotal("dead-store", 1, 512, None),
            VerdictTotal("fresh-temporary", 2, 1050624, 12.0),
            VerdictTotal("needed", 1, 4096, 3.0),
        ),
    )
    # 1051136 B = 1026.5 KiB = 1.0 MiB (one decimal)
    assert s.line() == "4 of 5 copies, 1.0 MiB, 12.5 us look eliminable"


def test_summary_line_without_device_timing_has_no_us_part():
    judged = view(trace(_copy(0, 1536, "dead-store"), _copy(1, 16, "needed")))
    assert eliminable_summary(judged).line() == "1 of 2 copies, 1.5 KiB look eliminable"


def test_summary_of_an_unjudged_trace_says_so():
    s = eliminable_summary(view(trace(_copy(0, 16, None), _copy(1, 16, None))))
    assert (s.judged, s.copies, s.line()) == (False, 0, "2 copies, not judged")


def test_summary_with_device_timing_but_nothing_eliminable_reports_zero_us():
    s = eliminable_summary(view(trace(_copy(0, 16, "needed", us=1.0))))
    assert s.line() == "0 of 1 copies, 0 B, 0.0 us look eliminable"
