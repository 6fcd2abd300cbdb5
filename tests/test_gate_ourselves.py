"""copyhunt gates itself: the bundled MoE demo through the marker, and the stored traces through the CLI.

Baseline: exactly 2 d2d copies per MoE layer (experts-copy and finalize-copy in copyhunt_moe/modular.py).
Fixed: none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import copyhunt
from copyhunt.cli import main
from copyhunt_moe import demo
from copyhunt_moe.modular import copy_sites
from copyhunt.tracefile import load

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
LAYERS = 3
DEMO = {"preset": "tiny", "layers": LAYERS, "tokens": 4, "device": "cpu", "backend": "torch"}


@pytest.fixture(scope="module")
def warm_demo() -> None:
    """Build (and cache) both stacks outside the traced test bodies; also warms the tracer's imports."""
    demo.baseline(**DEMO)
    demo.fixed(**DEMO)
    with copyhunt.hunt():
        torch.ones(2).clone()


@pytest.mark.limit_copies(2 * LAYERS, kind="d2d", region="moe")
def test_baseline_makes_at_most_two_copies_per_layer(warm_demo):
    with copyhunt.region("moe"):
        demo.baseline(**DEMO)


@pytest.mark.limit_copies(0, kind="d2d", region="moe")
def test_fixed_makes_no_output_copy(warm_demo):
    with copyhunt.region("moe"):
        demo.fixed(**DEMO)


def test_exact_counts_and_lines(warm_demo, copyhunt):
    # "At most" above, "exactly" here: 2 copies per layer, attributed to the two copy lines of modular.py.
    with copyhunt.hunt() as h:
        demo.baseline(**DEMO)
    sites = copy_sites()
    expected = [(sites["experts-copy"].line, "apply")] * LAYERS + [(sites["finalize-copy"].line, "apply")] * LAYERS
    assert sorted((c.site.line, c.site.function) for c in h.trace.copies) == sorted(expected)
    assert copyhunt.count(h.trace, kind="d2d") == 2 * LAYERS
    with copyhunt.hunt() as h:
        demo.fixed(**DEMO)
    assert copyhunt.count(h.trace, kind=None) == 0  # no copy of any kind on the fixed path


def test_baseline_one_below_the_limit_fails(pytester, warm_demo):
    pytester.makepyfile(test_inner=f"""
import pytest
import copyhunt
from copyhunt_moe import demo

DEMO = {DEMO!r}

@pytest.mark.limit_copies({2 * LAYERS - 1}, kind="d2d", region="moe")
def test_baseline():
    with copyhunt.region("moe"):
        demo.baseline(**DEMO)

@pytest.mark.limit_copies({2 * LAYERS}, kind="d2d", region="moe")
def test_baseline_at_limit():
    with copyhunt.region("moe"):
        demo.baseline(**DEMO)
""")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*copyhunt: {2 * LAYERS} d2d copies in region moe, over the limit of {2 * LAYERS - 1}:*"])


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)  # CI runs the gate from the repository root; paths in the traces are relative to it
    return ROOT


def test_ci_gate_passes_the_fixed_trace(in_repo, capsys):
    assert main(["gate", "traces/moe-fixed-cpu.json", "--budget", "copyhunt.toml"]) == 0
    assert capsys.readouterr().out.startswith("copyhunt gate: PASS")


def test_ci_gate_fails_the_baseline_trace_at_the_two_copy_lines(in_repo, capsys):
    assert main(["gate", "traces/moe-baseline-cpu.json", "--budget", "copyhunt.toml", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    layers = 4  # the stored traces use the demo's CPU defaults: tiny preset, 4 layers, 4 tokens
    by_rule = {v["rule"]: v for v in doc["violations"]}
    output = by_rule["MoE output copies"]
    assert output["actual"] == 2 * layers
    sites = copy_sites()
    # The stored trace still points at the current copy lines (regenerate it with
    # traces/make_moe_cpu_traces.py when modular.py moves them).
    assert sorted((s["file"], s["line"], s["count"]) for s in output["sites"]) == sorted(
        ("copyhunt_moe/modular.py", sites[name].line, layers) for name in ("experts-copy", "finalize-copy")
    )
    # Each copy is one M x K fp32 output: 4 tokens x 32 hidden x 4 bytes = 512 B; 8 copies = 4096 B.
    assert doc["rules"][0]["bytes"] == 2 * layers * 512


def test_stored_traces_match_the_demo(in_repo):
    fixed = load("traces/moe-fixed-cpu.json")
    baseline = load("traces/moe-baseline-cpu.json")
    assert fixed.meta.complete and baseline.meta.complete
    assert len(fixed.copies) == 0
    assert len(baseline.copies) == 8


def test_ci_line_exit_codes_as_a_process():
    # The exact command CI runs, as a real process: its exit status is the gate's verdict.
    for trace, code in (("traces/moe-fixed-cpu.json", 0), ("traces/moe-baseline-cpu.json", 1)):
        proc = subprocess.run(
            [sys.executable, "-m", "copyhunt", "gate", trace, "--budget", "copyhunt.toml", "--format", "github"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == code, proc.stderr
    assert proc.stdout.splitlines()[-1] == "copyhunt gate: FAIL - 2 violations"
