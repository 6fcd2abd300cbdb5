"""README's install and test lines: what CI runs, the CPU wheel index, and a first run with nothing but the table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[list[str]]:
    return [[ln for ln in b.splitlines() if ln and not ln.startswith("#")] for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = ci.split("# --- the README's test command (keep the two identical) ---\n", 1)[1].splitlines()[0]
    assert ci_command == "pip install -q torch==2.13.0 -e '.[test,triton]' && python -m pytest -q"
    assert [ci_command] in _bash_blocks(readme)


def test_readme_gives_cpu_users_pytorchs_cpu_index():
    readme = (ROOT / "README.md").read_text()
    install = _bash_blocks(readme)[0]
    assert install == [
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
        "pip install torch==2.13.0 -e . && copyhunt trace",
    ]
    assert "pins the CPU wheel" not in readme  # the old claim: PyPI serves the CUDA build


def test_numpy_is_a_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"numpy\b", d) for d in deps)


def test_first_run_prints_only_the_table_and_the_next_step(tmp_path):
    # `copyhunt trace` on the demo, as README's first line ends: stdout the table, stderr one line (no warnings).
    env = dict(os.environ, COLUMNS="80", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "copyhunt", "trace", "-o", "t.json"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "copyhunt: next: `copyhunt report t.json --html report.html` to browse it, "
        "`copyhunt diff OLD.json t.json` to compare, `copyhunt gate t.json` to check a budget"
    ]
    # README's table ("80 columns, from a real run") is this run's table, line for line.
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("```\nSource site", 1)[1].split("```", 1)[0]
    table = ("Source site" + shown).rstrip("\n").splitlines()
    out = [ln.rstrip() for ln in proc.stdout.splitlines()]
    start = out.index(table[0])
    assert out[start : start + len(table)] == table
