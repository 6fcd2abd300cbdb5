"""copyhunt.region: nested labels, decorator, threads, profiler ranges, and the hunt's region filter."""

from __future__ import annotations

import threading

import pytest
import torch

import copyhunt
from copyhunt.capture.regions import RegionNameError, region
from copyhunt.errors import CopyhuntError
from copyhunt.hunting import hunt
from copyhunt.selection import region_matches


def test_nested_regions_label_records() -> None:
    x = torch.ones(4)
    with hunt() as h:
        x.clone()
        with copyhunt.region("decode"):
            x.clone()
            with copyhunt.region("moe"):
                x.clone()
            x.clone()
    assert [c.region for c in h.copies] == [None, "decode", "decode/moe", "decode"]
    # every op, not only copies, carries the region
    assert {o.region for o in h.trace.ops} == {None, "decode", "decode/moe"}


def test_decorator_and_recursion() -> None:
    x = torch.ones(4)

    @region("step")
    def step(n: int) -> None:
        x.clone()
        if n:
            step(n - 1)

    with hunt() as h:
        step(2)
        x.clone()  # after the calls: outside every region again
    assert [c.region for c in h.copies] == ["step", "step/step", "step/step/step", None]


def test_region_is_restored_when_the_block_raises() -> None:
    x = torch.ones(4)
    with hunt() as h:
        with pytest.raises(ValueError):
            with region("a"):
                with region("b"):
                    x.clone()
                    raise ValueError("x")
        x.clone()
    assert [c.region for c in h.copies] == ["a/b", None]


def test_regions_are_per_thread() -> None:
    x = torch.ones(4)
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        with region(name):
            barrier.wait(5)  # both threads are inside their region at once
            x.clone()
            barrier.wait(5)

    with hunt() as h:
        threads = [threading.Thread(target=worker, args=(n,)) for n in ("t1", "t2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(c.region for c in h.copies) == ["t1", "t2"]
    by_region = {c.region: c.thread for c in h.copies}
    assert by_region["t1"] != by_region["t2"]


def test_region_outside_a_hunt_is_a_profiler_range() -> None:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with region("ch_outer"):
            with region("ch_inner"):
                torch.ones(3).clone()
    names = [e.name for e in prof.events()]
    assert names.count("ch_outer") == 1 and names.count("ch_inner") == 1


def test_region_inside_a_hunt_still_shows_in_the_profiler() -> None:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with hunt() as h:
            with region("ch_both"):
                torch.ones(3).clone()
    assert [e.name for e in prof.events()].count("ch_both") == 1
    # the region's own record_function ops are not recorded as data ops
    assert not any(o.op.startswith("profiler.") for o in h.trace.ops)


def test_bad_region_names() -> None:
    for bad in ("", "  ", "a/b", 3):
        with pytest.raises(RegionNameError):
            region(bad)  # type: ignore[arg-type]
    assert issubclass(RegionNameError, CopyhuntError)


def test_region_matches() -> None:
    assert region_matches("decode/moe/experts", "moe")
    assert region_matches("decode/moe/experts", "moe/experts")
    assert region_matches("decode/moe/experts", "decode/moe/experts")
    assert not region_matches("decode/moe/experts", "decode/experts")  # not consecutive
    assert not region_matches("decode/moex", "moe")  # whole names only
    assert not region_matches(None, "moe")


def test_hunt_region_filter_keeps_records_at_any_depth() -> None:
    x = torch.ones(4)
    with hunt(region="moe") as h:
        x.clone()
        with region("moe"):
            x.clone()
        with region("decode"), region("moe"), region("experts"):
            x.clone()
        with region("attn"):
            x.clone()
    assert [c.region for c in h.copies] == ["moe", "decode/moe/experts"]
    # The region is a view over a full capture, recorded in meta: the trace keeps every copy.
    assert h.trace.meta.view == {"region": "moe"} and len(h.trace.copies) == 4
    # ops are kept whole: the verdicts need the accesses around the copies
    assert len([o for o in h.trace.ops if o.is_copy]) == 4
