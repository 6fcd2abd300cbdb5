"""The HTML report shows each copy's `copyhunt verify` result (Copy.verification) where there is one."""

from __future__ import annotations

import json
import re

from copyhunt.records import Frame, Verification
from copyhunt.report.html import render_html
from copyhunt.report.html_data import report_data
from factories import copy, trace

SITE_A, SITE_B = Frame("/p/m.py", 3, "f"), Frame("/p/m.py", 9, "g")


def _trace():
    return trace(
        copy(0, 64, site=SITE_A, verdict="fresh-temporary", reason="r", suggestion="s",
             verification=Verification("verified", "identical return value on this input")),
        copy(1, 32, site=SITE_B, verdict="dead-store", reason="r2", suggestion="s2",
             verification=Verification("refuted", "the return value differs; first diverging op aten.mul (m.py:10)", 7)),
        copy(2, 16, site=SITE_B, op="aten.clone.default", verdict="needed", reason="none of the rules applied"),
    )


def test_entries_carry_the_proof():
    stacks = report_data(_trace())["stacks"]
    assert [(s["b"], s["pf"]) for s in stacks] == [
        (64, ["verified", "identical return value on this input"]),
        (32, ["refuted", "the return value differs; first diverging op aten.mul (m.py:10)"]),
        (16, None),
    ]


def test_page_embeds_the_proof_and_renders_it():
    page = render_html(_trace(), trace_path="t.json")
    data = json.loads(re.search(r"<script type=\"application/json\" id=\"copyhunt-data\">(.*?)</script>", page, re.S).group(1))
    assert [s["pf"][0] if s["pf"] else None for s in data["stacks"]] == ["verified", "refuted", None]
    # The page's script shows it in the details and under the site table's "why" row.
    assert 'para("proof", pf[0] + ": " + pf[1])' in page
    assert page.count("proof(s.pf)") == 1 and page.count("proof(g.why.pf)") == 1
