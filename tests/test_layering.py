"""Import layering, read from the source (nothing is imported): a module imports its own package or
lower layers only; command modules never import each other; the bundled demo uses only ``copyhunt.note``.

    errors, text, notes  <-  records, kineto  <-  tracefile, selection  <-  view  <-  capture  <-  attribution,
      capture.compiled  <-  importers  <-  analysis  <-  hunting  <-  follow, report, gate, targets, bench, verify  <-  cli,
      pytest_plugin  <-  __main__, _child

``kineto`` (Chrome-trace parsing) is a leaf beside ``records``: capture, importers and report read
profiler files through it, and it uses the standard library and ``copyhunt.errors`` only.
``capture.compiled`` (the torch.compile capture) builds on the dispatch capture, which knows it only
through a hook: no other capture module imports it.

Imports under ``if TYPE_CHECKING:`` are left out (they run nothing); ``import copyhunt`` (the light
package root) is allowed everywhere.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Layer of each part of copyhunt: a module may import its own part, or parts of a lower layer.
LAYERS = {
    "copyhunt.errors": 0,
    "copyhunt.text": 0,
    "copyhunt.gc_pause": 0,
    "copyhunt.notes": 0,
    "copyhunt.records": 1,
    "copyhunt.tracecolumns": 1.5,  # the /3 file's columns, between the records and the file: records and errors only
    "copyhunt.validation": 1.5,  # checks records' values and reads untrusted files: below every reader
    "copyhunt.kineto": 1,  # standard library + copyhunt.errors only (test_kineto_is_standard_library_only)
    "copyhunt.tracefile": 2,
    "copyhunt.selection": 2,
    "copyhunt.view": 3,
    "copyhunt.capture": 4,
    "copyhunt.attribution": 5,
    "copyhunt.capture.compiled": 5,  # on top of the dispatch capture, which calls it only through a hook
    "copyhunt.importers": 6,
    "copyhunt.analysis": 7,
    "copyhunt.hunting": 8,
    "copyhunt.follow": 9,  # following child processes: a hunt per child (the runner and copyhunt._child use it)
    "copyhunt.report": 9,
    "copyhunt.gate": 9,
    "copyhunt.targets": 9,
    "copyhunt.bench": 9,
    "copyhunt.verify": 9,  # re-runs with copies elided: the capture's op numbering, the analysis' sources, the hunt
    "copyhunt.cli": 10,
    "copyhunt._child": 11,  # python -m copyhunt._child: a followed child process runs its program under a hunt
    "copyhunt.pytest_plugin": 10,
    "copyhunt.__main__": 11,  # python -m copyhunt: runs the CLI
}
#: Modules that are facades over everything (the package root exports the public API lazily).
FACADES = {"copyhunt"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Modules ``path`` imports at run time (top level or inside functions), not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from copyhunt.cli import options` imports copyhunt.cli.options
            out.extend(f"{node.module}.{a.name}" if node.module in ("copyhunt", "copyhunt.cli") else node.module for a in node.names)
    return out


def _part(name: str) -> str | None:
    """The LAYERS key a copyhunt module belongs to (the longest matching prefix)."""
    keys = [k for k in LAYERS if name == k or name.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _sources("copyhunt"), ids=lambda p: _module_name(p))
def test_every_module_imports_downward(path: Path) -> None:
    name = _module_name(path)
    if name in FACADES:
        return
    mine = _part(name)
    assert mine is not None, f"{name}: give it a layer in LAYERS"
    bad = []
    for imported in _imports(path):
        if imported == "copyhunt_moe" or imported.startswith("copyhunt_moe."):
            if mine != "copyhunt.bench":  # the A/B of the demo is the one user of the demo
                bad.append(f"{imported} (the bundled demo)")
            continue
        if not imported.startswith("copyhunt") or imported in FACADES or imported in ("copyhunt.note", "copyhunt.__version__"):
            continue
        theirs = _part(imported)
        if theirs is None:
            continue  # a name imported from the root facade (copyhunt.hunt, copyhunt.region...)
        if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
            bad.append(f"{imported} (layer {LAYERS[theirs]} >= {LAYERS[mine]})")
    assert bad == [], f"{name} (layer {LAYERS[mine]}) imports upward or sideways: {bad}"


def test_command_modules_never_import_each_other() -> None:
    for path in sorted((ROOT / "copyhunt" / "cli").glob("*_cmd.py")):
        siblings = [i for i in _imports(path) if i.startswith("copyhunt.cli.") and i.endswith("_cmd")]
        assert siblings == [], f"{path.name} imports {siblings}"


@pytest.mark.parametrize("path", _sources("copyhunt_moe"), ids=lambda p: _module_name(p))
def test_the_demo_uses_only_the_public_note(path: Path) -> None:
    ours = [i for i in _imports(path) if i == "copyhunt" or i.startswith("copyhunt.")]
    assert set(ours) <= {"copyhunt.note"}, f"{_module_name(path)} imports copyhunt internals: {ours}"


@pytest.mark.parametrize("path", _sources("copyhunt/kineto"), ids=lambda p: _module_name(p))
def test_kineto_is_standard_library_only(path: Path) -> None:
    # The CPU suite parses real GPU traces with it, and the importers run without torch's profiler.
    imported = {i.split(".")[0] for i in _imports(path)} - {"copyhunt", "__future__"}
    assert imported <= sys.stdlib_module_names, f"{_module_name(path)} imports {sorted(imported - sys.stdlib_module_names)}"
    ours = [i for i in _imports(path) if i.startswith("copyhunt.") and _part(i) != "copyhunt.kineto"]
    assert set(ours) <= {"copyhunt.errors"}, f"{_module_name(path)} imports {ours}"


def test_the_check_can_fail(tmp_path: Path) -> None:
    # A module importing upward is caught (the walk sees imports inside functions too).
    bad = tmp_path / "records.py"
    bad.write_text("def f():\n    from copyhunt.cli import main\n")
    assert "copyhunt.cli.main" in _imports(bad)
    assert LAYERS[_part("copyhunt.cli.main")] > LAYERS["copyhunt.records"]
