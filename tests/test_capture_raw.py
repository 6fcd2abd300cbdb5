"""The raw-row contract (capture/raw.py) and the one site chooser (capture/sites.py)."""

from __future__ import annotations

import inspect
import sys

import torch

from copyhunt.attribution import KinetoSiteRule, SiteRule
from copyhunt.capture.raw import COPY_FIELDS, OP_FIELDS, RawLog
from copyhunt.capture.sites import CANDIDATE, FOCUSED, SKIP, OutsideCopyhunt, SiteChooser, choose
from copyhunt.hunting import hunt


def test_writer_takes_the_fields_in_the_listed_order() -> None:
    assert tuple(inspect.signature(RawLog.op).parameters)[1:] == OP_FIELDS
    assert tuple(inspect.signature(RawLog.copy).parameters)[1:] == COPY_FIELDS


def test_reader_reads_what_the_writer_wrote_and_releases_the_rows() -> None:
    log = RawLog()
    site = log.site(sys._getframe())
    line = sys._getframe().f_lineno - 1  # the line of log.site(...) above
    log.op(3, "aten.add.Tensor", (0, 0, 64, True, 1, 0, 32, False), (1, 0, 64, True), (1,), (), site, "m", "r", 7, False, False)
    log.op(1, "aten.abs.default", (0, 8, 16, False), (), (), (0,), None, None, None, 7, False, True)
    res = log.read(devices=["cpu", "cpu"], nbytes=[64, 64], alive={1}, attribute=lambda s: (None, ()), notes=[])
    assert [(o.seq, o.op, o.module, o.region, o.thread, o.captured_in_graph) for o in res.ops] == [
        (1, "aten.abs.default", None, None, 7, True),
        (3, "aten.add.Tensor", "m", "r", 7, False),
    ]
    assert [(a.storage, a.offset, a.nbytes, a.dense) for a in res.ops[0].reads] == [(0, 8, 16, False)]
    assert [(a.storage, a.offset, a.nbytes, a.dense) for a in res.ops[1].reads] == [(0, 0, 64, True), (1, 0, 32, False)]
    assert [(a.storage, a.nbytes) for a in res.ops[1].writes] == [(1, 64)]
    assert (res.ops[0].frees, res.ops[1].allocs) == ((0,), (1,))
    assert (res.ops[1].site.file, res.ops[1].site.line, res.ops[1].site.function) == (__file__, line, "test_reader_reads_what_the_writer_wrote_and_releases_the_rows")
    assert [(s.id, s.alive_at_end) for s in res.storages] == [(0, False), (1, True)]
    assert log.ops == [] and log.copies == []


def test_choose_is_the_first_wanted_else_the_first_candidate() -> None:
    assert choose([SKIP, CANDIDATE, FOCUSED], FOCUSED) == 2
    assert choose([SKIP, CANDIDATE, CANDIDATE], FOCUSED) == 1
    assert choose([SKIP, CANDIDATE, FOCUSED], CANDIDATE) == 1
    assert choose([SKIP, SKIP], CANDIDATE) is None


def _inner(chooser: SiteChooser) -> object:
    return chooser.live(sys._getframe())


def test_live_frames_and_stacks_of_names_choose_the_same_site() -> None:
    # focus on this test function: the innermost frame (_inner) is a candidate, the caller is focused.
    rule = SiteRule(focus=["*test_capture_raw.py"], hide=[])
    chooser = SiteChooser(rule)
    f = _inner(chooser)
    assert f.f_code.co_name == "_inner"  # same file: focused at once
    rule = SiteRule(focus=[], hide=[__file__])
    f = SiteChooser(rule).live(sys._getframe())
    files = []
    g = sys._getframe()
    while g is not None:
        files.append(g.f_code.co_filename)
        g = g.f_back
    i = rule.choose_index(files)
    walk = sys._getframe()
    for _ in range(i):
        walk = walk.f_back
    assert f is walk and f.f_code.co_filename != __file__
    assert KinetoSiteRule().choose_index(["torch/nn/modules/module.py", "inspect.py", "model.py", "main.py"]) == 2
    assert OutsideCopyhunt().rank(torch.__file__) == CANDIDATE


def test_hunt_without_a_rule_still_records_sites() -> None:
    from copyhunt.capture import dispatch
    from copyhunt.capture.dispatch import DispatchCapture

    cap = DispatchCapture()
    x = torch.ones(4)
    cap.start()
    try:
        y = x.clone()  # the site
        line = sys._getframe().f_lineno - 1
    finally:
        cap.stop()
    res = cap.build()
    # Without a rule only copyhunt's own frames are skipped. The mode switches Dynamo's hook off
    # itself (no torch wrapper frame between the op's caller and the mode, capture/dispatch.py), so
    # the innermost other frame is this line; where torch's wrapper runs, it is torch's frame.
    (c,) = res.copies
    assert c.op == "aten.clone.default" and "/copyhunt/" not in c.site.file
    if dispatch._OWN_DYNAMO_SWITCH:
        assert (c.site.file, c.site.line) == (__file__, line)
    else:
        assert "/torch/" in c.site.file
    assert any(fr.line == line and fr.file == __file__ for fr in c.stack)
    assert float(y.sum()) == 4.0
    with hunt() as h:
        x.clone()
    line = sys._getframe().f_lineno - 1
    assert [(c.site.file, c.site.line) for c in h.copies] == [(__file__, line)]
