"""`copyhunt bench moe`: the A/B arithmetic, the CPU smoke run and the CLI (no GPU needed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from copyhunt.bench.moe import BenchConfig, BenchConfigError, _row, run_bench, smoke_config
from copyhunt.cli import main
from copyhunt_moe import get_preset


def test_row_arithmetic_on_paired_samples() -> None:
    # Paired differences 2, 2, 3, 2 -> median 2.0; quartiles (inclusive) 2.0 and 2.25 -> spread 0.125 -> 0.12.
    r = _row("graph", 64, [10.0, 11.0, 13.0, 12.0], [8.0, 9.0, 10.0, 10.0], [2.5, 2.5, 2.5], 0.0)
    assert (r.baseline_us, r.fixed_us, r.saved_us, r.spread_us, r.ideal_us) == (11.5, 9.5, 2.0, 0.12, 2.5)
    assert r.realized == 0.8  # 2.0 / 2.5
    assert r.saved_pct == round(100 * 2.0 / 11.5, 2)  # 17.39
    assert r.fixed_not_slower
    slower = _row("eager", 1, [10.0, 10.0, 10.0], [11.0, 11.0, 11.0], [1.0, 1.0, 1.0], 0.0)
    assert slower.saved_us == -1.0 and slower.spread_us == 0.0 and not slower.fixed_not_slower


def test_config_validation() -> None:
    with pytest.raises(BenchConfigError, match="--layers must be >= 1"):
        BenchConfig(layers=0)
    with pytest.raises(BenchConfigError, match="token counts"):
        BenchConfig(tokens=(0,))
    with pytest.raises(BenchConfigError, match="--mode"):
        BenchConfig(modes=("sideways",))


def test_cpu_smoke_run_counts_two_copies_per_layer_then_none() -> None:
    result = run_bench(smoke_config(layers=2, tokens=(2,), rounds=3))
    assert result.smoke and [(r.mode, r.tokens) for r in result.rows] == [("eager", 2)]
    assert result.rows[0].max_abs_diff == 0.0  # same weights, same input: identical outputs
    hidden = get_preset("tiny").hidden
    assert result.copies_per_layer["baseline"] == {
        "d2d_per_layer": 2.0, "output_copies_per_layer": 2.0,
        "output_copy_bytes_per_layer": 2 * 2 * hidden * 2,  # 2 copies x 2 tokens x hidden x bf16
    }
    assert result.copies_per_layer["fixed"]["d2d_per_layer"] == 0.0
    assert result.to_json()["schema"] == "copyhunt.bench.moe/1"


def test_cli_json_and_bad_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "moe", "--tokens", "2", "--layers", "1", "--rounds", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["smoke"] is True and doc["copies_per_layer"]["baseline"]["output_copies_per_layer"] == 2.0
    assert main(["bench", "moe", "--tokens", "a,b"]) == 2
    assert "--tokens" in capsys.readouterr().err


def test_cli_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.png"
    rc = main(["bench", "moe", "--tokens", "2", "--layers", "1", "--rounds", "3", "--plot", str(out)])
    if importlib.util.find_spec("matplotlib") is None:
        # The optional extra is missing: one clear line and exit 2, no file.
        assert rc == 2 and "pip install 'copyhunt[plot]'" in capsys.readouterr().err and not out.exists()
    else:
        assert rc == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
