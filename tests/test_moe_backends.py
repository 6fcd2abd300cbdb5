"""The backend registry: names, lazy optional imports, clear errors, trace notes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import copyhunt_moe
from copyhunt_moe.backends import auto_backend_name, backend_names, backend_notes, make_backend
from copyhunt_moe.errors import BackendUnavailableError, MoEConfigError


def test_names() -> None:
    assert backend_names() == ["torch", "reference", "library", "triton", "grouped_mm", "aiter", "auto"]


@pytest.mark.parametrize(("name", "destination"), [("torch", True), ("reference", True), ("library", False)])
def test_pure_torch_backends(name: str, destination: bool) -> None:
    backend = make_backend(name)
    assert backend.name == name and backend.supports_destination is destination


def test_auto_is_torch_on_cpu() -> None:
    assert auto_backend_name("cpu") == "torch"
    assert make_backend("auto", device="cpu").name == "torch"


def test_unknown_backend_lists_valid_names() -> None:
    with pytest.raises(MoEConfigError, match="valid: torch, reference, library, triton, grouped_mm, aiter, auto"):
        make_backend("cutlass")


@pytest.mark.skipif(getattr(torch.version, "hip", None) is not None, reason="a ROCm build may have AITER")
def test_aiter_without_rocm_is_unavailable_with_a_reason() -> None:
    with pytest.raises(BackendUnavailableError, match="aiter"):
        make_backend("aiter")


def test_importing_moe_does_not_import_optional_packages() -> None:
    code = (
        "import sys, copyhunt_moe, copyhunt_moe.demo, copyhunt_moe.backends;"
        "print(sorted(m for m in ('triton', 'aiter', 'copyhunt_moe.triton_experts', 'copyhunt_moe.aiter_experts')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_moe_imports_nothing_from_the_profiler_side() -> None:
    # `import copyhunt` itself loads copyhunt.records; moe must add nothing outside copyhunt_moe.
    code = (
        "import sys, copyhunt; before = set(sys.modules);"
        "import copyhunt_moe, copyhunt_moe.demo, copyhunt_moe.testing;"
        "print(sorted(m for m in set(sys.modules) - before"
        " if m.startswith('copyhunt.') and not m.startswith('copyhunt_moe')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # And statically: no module of the package names another copyhunt package.
    moe_dir = Path(copyhunt_moe.__file__).parent
    offenders = [
        f"{path.name}: {line.strip()}"
        for path in sorted(moe_dir.glob("*.py"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*(from|import)\s+copyhunt\.(?!moe\b)", line)
    ]
    assert offenders == []


def test_backend_notes() -> None:
    assert backend_notes(make_backend("library")) == ["moe backend: library (destination passing: no)"]

    class WithMode:
        name = "aiter"
        supports_destination = False
        destination_mode = "copy-fallback"
        destination_reason = "no output= and no output_buffer_override"

    assert backend_notes(WithMode()) == [  # type: ignore[arg-type]
        "moe backend: aiter (destination passing: no)",
        "moe aiter destination mode: copy-fallback (no output= and no output_buffer_override)",
    ]
