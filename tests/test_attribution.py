"""Attribution: the site is the first frame outside torch, copyhunt and the standard library;
--focus / --hide move it. Pure functions on hand-built stacks, then end to end through a hunt."""

from __future__ import annotations

import inspect
import os
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import copyhunt
from copyhunt.attribution import BadGlobError, SiteRule, attribute, is_library_file
from copyhunt.errors import CopyhuntError
from copyhunt.hunting import hunt
from copyhunt.records import Frame

TORCH_FILE = os.path.join(os.path.dirname(torch.__file__), "nn", "functional.py")
OURS_FILE = os.path.join(os.path.dirname(copyhunt.__file__), "capture", "dispatch.py")
STDLIB_FILE = os.path.join(sysconfig.get_paths()["stdlib"], "contextlib.py")
USER = "/home/u/app/model.py"
LIB = "/home/u/app/lib/helpers.py"


def fr(file: str, line: int, fn: str = "f") -> Frame:
    return Frame(file, line, fn)


def choose_site(stack: tuple[Frame, ...], focus: tuple[str, ...] | list[str] = (), hide: tuple[str, ...] | list[str] = ()) -> Frame | None:
    """The site ``attribute`` picks under these globs."""
    return attribute(stack, SiteRule(focus, hide), depth=8)[0]


STACK = (
    fr(OURS_FILE, 10, "__torch_dispatch__"),
    fr(TORCH_FILE, 20, "pad"),
    fr(LIB, 30, "helper"),
    fr(STDLIB_FILE, 40, "inner"),
    fr(USER, 50, "forward"),
    fr(USER, 60, "main"),
)


def test_library_files() -> None:
    assert [is_library_file(f) for f in (TORCH_FILE, OURS_FILE, STDLIB_FILE, USER, "<frozen runpy>")] == [
        True,
        True,
        True,
        False,
        True,
    ]
    # Third-party packages in site-packages are user-visible sites (vLLM, AITER...), torch is not.
    site_pkgs = sysconfig.get_paths()["purelib"]
    assert is_library_file(os.path.join(site_pkgs, "vllm", "layer.py")) is False
    assert is_library_file(os.path.join(site_pkgs, "torch", "x.py")) is True
    # The bundled MoE demo is a package apart: user code to the tracer, with no special case.
    import copyhunt_moe.modular

    assert is_library_file(copyhunt_moe.modular.__file__) is False


def test_default_site_is_first_frame_outside_torch_copyhunt_stdlib() -> None:
    assert choose_site(STACK) == fr(LIB, 30, "helper")


def test_hide_moves_the_site_to_the_caller() -> None:
    assert choose_site(STACK, hide=["*/lib/*"]) == fr(USER, 50, "forward")
    assert choose_site(STACK, hide=["*/lib/*", "*/model.py"]) is None


def test_focus_picks_the_innermost_matching_frame() -> None:
    assert choose_site(STACK, focus=["*/model.py"]) == fr(USER, 50, "forward")
    # focus may even name a torch file: the user asked for it
    assert choose_site(STACK, focus=["*/nn/functional.py"]) == fr(TORCH_FILE, 20, "pad")
    # no frame matches: the default rule applies
    assert choose_site(STACK, focus=["*/nowhere.py"]) == fr(LIB, 30, "helper")
    # hide wins over focus for the same file
    assert choose_site(STACK, focus=["*/model.py"], hide=["*/model.py"]) == fr(LIB, 30, "helper")


def test_short_stack_starts_at_the_site() -> None:
    site, short = attribute(STACK, SiteRule(), depth=2)
    assert site == fr(LIB, 30, "helper")
    assert short == (fr(LIB, 30, "helper"), fr(STDLIB_FILE, 40, "inner"))
    site, short = attribute(STACK[:2], SiteRule(), depth=1)  # nothing qualifies
    assert site is None and short == (STACK[0],)


def test_bad_globs() -> None:
    with pytest.raises(BadGlobError, match="--focus"):
        SiteRule(focus=[""])
    with pytest.raises(BadGlobError, match="--hide"):
        SiteRule(hide=[3])  # type: ignore[list-item]
    assert issubclass(BadGlobError, CopyhuntError)
    assert SiteRule(focus="*/a.py").focus == ("*/a.py",)  # a bare string is one glob, not letters


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture
def helper_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "ch_attr_helper.py").write_text(
        "def dup(x):\n"
        "    return x.clone()  # line 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("ch_attr_helper", None)
    import ch_attr_helper  # type: ignore[import-not-found]

    yield ch_attr_helper
    sys.modules.pop("ch_attr_helper", None)


def _line() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_hunt_default_focus_and_hide(helper_module) -> None:  # type: ignore[no-untyped-def]
    x = torch.ones(3)
    with hunt() as h:
        call_line = _line(); helper_module.dup(x)  # fmt: skip
    assert (Path(h.copies[0].site.file).name, h.copies[0].site.line) == ("ch_attr_helper.py", 2)

    with hunt(hide=["*/ch_attr_helper.py"]) as h:
        call_line = _line(); helper_module.dup(x)  # fmt: skip
    c = h.copies[0]
    assert (c.site.file, c.site.line, c.site.function) == (__file__, call_line, "test_hunt_default_focus_and_hide")
    # the per-op site follows the same rule
    (op,) = [o for o in h.trace.ops if o.is_copy]
    assert op.site == c.site
    assert (h.trace.meta.hide, h.trace.meta.focus) == (("*/ch_attr_helper.py",), ())

    with hunt(focus=["*/test_attribution.py"]) as h:
        call_line = _line(); helper_module.dup(x)  # fmt: skip
    assert (h.copies[0].site.file, h.copies[0].site.line) == (__file__, call_line)
    assert h.copies[0].stack[0] == h.copies[0].site


def test_inference_mode_attribution_matches_normal_mode(helper_module) -> None:  # type: ignore[no-untyped-def]
    x = torch.ones(2, 3)
    sites = []
    for cm in (torch.enable_grad, torch.no_grad, torch.inference_mode):
        with cm(), hunt(hide=["*/ch_attr_helper.py"]) as h:
            x.t().contiguous()
            helper_module.dup(x)
        sites.append([(c.op, c.site) for c in h.copies])
    assert sites[0] == sites[1] == sites[2]
    assert [s.file for _, s in sites[0]] == [__file__, __file__]
