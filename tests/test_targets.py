"""Parsing and running targets: script path, -m module, module:function; not-found vs the user's errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from copyhunt.errors import TargetNotFoundError
from copyhunt.targets import DEFAULT_TARGET, Target, TargetExit, parse_target


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A package `chpkg` in tmp_path (put on sys.path) whose modules record what they saw in `chpkg.seen`."""
    write(tmp_path / "chpkg" / "__init__.py", "seen = []\n")
    write(
        tmp_path / "chpkg" / "tool.py",
        """\
        import sys
        import chpkg
        def main():
            chpkg.seen.append(("main", __name__))
        def fails():
            raise ValueError("boom from fails")
        NOT_CALLABLE = 3
        class K:
            @staticmethod
            def run():
                chpkg.seen.append(("K.run", __name__))
        if __name__ == "__main__":
            chpkg.seen.append(("as-main", list(sys.argv[1:])))
        """,
    )
    write(tmp_path / "chpkg" / "broken.py", "import chpkg_missing_dependency\ndef main():\n    pass\n")
    write(tmp_path / "chpkg" / "exits.py", "import sys\nsys.exit(int(sys.argv[1]) if sys.argv[1:] else None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "chpkg" or m.startswith("chpkg.")]:
        monkeypatch.delitem(sys.modules, name)
    yield tmp_path
    for name in [m for m in sys.modules if m == "chpkg" or m.startswith("chpkg.")]:
        del sys.modules[name]


def test_parse_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "s.py", "")
    assert parse_target("s.py", None, ["a"]) == Target("script", "s.py", ("a",))
    assert parse_target("a.b:run", None, []) == Target("function", "a.b:run", ())
    # With -m, a positional TARGET is the program's first argument.
    assert parse_target("x", "a.b", ["y"]) == Target("module", "a.b", ("x", "y"))
    assert parse_target(None, None, []) == Target("function", DEFAULT_TARGET, ())
    assert Target("module", "a.b").display == "-m a.b"
    assert Target("function", "copyhunt_moe.demo:baseline").stem == "copyhunt_moe.demo.baseline"
    assert Target("script", "dir/my script.py").stem == "my_script"


@pytest.mark.parametrize(
    "target, module, message",
    [
        ("missing.py", None, "no such script: missing.py"),
        ("sub/dir/x", None, "no such script: sub/dir/x"),
        ("a.b:", None, "'a.b:' is not package.module:function"),
        ("word", None, "'word' is neither a script path nor package.module:function (for a module, use -m word)"),
        (None, "not a module", "-m 'not a module' is not a module name (expected package.module)"),
    ],
)
def test_parse_errors_are_one_line(tmp_path, monkeypatch, target, module, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TargetNotFoundError) as info:
        parse_target(target, module, [])
    assert str(info.value) == message


def test_script_runs_as_main_with_argv_and_path_restored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.txt"
    write(tmp_path / "scripts" / "helper_mod_for_script.py", "VALUE = 41\n")
    write(
        tmp_path / "scripts" / "s.py",
        f"""\
        import sys
        import helper_mod_for_script  # importable: the script's folder is first on sys.path
        open({str(out)!r}, "w").write(repr((__name__, sys.argv, helper_mod_for_script.VALUE + 1)))
        """,
    )
    argv, path = sys.argv[:], sys.path[:]
    target = parse_target("scripts/s.py", None, ["--flag", "1"])
    target.check()
    target.run()
    script = str(tmp_path / "scripts" / "s.py")  # absolute, as Python >= 3.9 makes it
    assert out.read_text() == repr(("__main__", [script, "--flag", "1"], 42))
    assert sys.argv == argv and sys.path == path
    sys.modules.pop("helper_mod_for_script", None)


def test_module_runs_as_main(pkg):
    import chpkg

    target = parse_target(None, "chpkg.tool", ["x", "--y"])
    target.check()
    target.run()
    assert chpkg.seen == [("as-main", ["x", "--y"])]


def test_function_target_imports_and_calls(pkg):
    import chpkg

    for spec in ("chpkg.tool:main", "chpkg.tool:K.run"):
        target = parse_target(spec, None, [])
        target.check()
        target.run()
    assert chpkg.seen == [("main", "chpkg.tool"), ("K.run", "chpkg.tool")]


def test_missing_module_and_function_are_not_found(pkg):
    with pytest.raises(TargetNotFoundError, match=r"^no module named 'chpkg.nothere' \(is it installed"):
        Target("module", "chpkg.nothere").check()
    with pytest.raises(TargetNotFoundError, match=r"^no module named 'nopkg_xyz.a'"):
        Target("function", "nopkg_xyz.a:f").check()
    with pytest.raises(TargetNotFoundError, match=r"^'chpkg' is a package without __main__; cannot run it with -m$"):
        Target("module", "chpkg").check()
    target = Target("function", "chpkg.tool:nothere")
    target.check()  # the module exists; the function is known to be missing only after the import
    with pytest.raises(TargetNotFoundError, match=r"^module 'chpkg.tool' has no function 'nothere'$"):
        target.run()
    with pytest.raises(TargetNotFoundError, match=r"^chpkg.tool:NOT_CALLABLE is not callable \(int\)$"):
        Target("function", "chpkg.tool:NOT_CALLABLE").run()


def test_import_error_inside_user_module_is_the_users(pkg):
    # The module exists; it imports something missing: that is the program's own error, not "not found".
    target = Target("function", "chpkg.broken:main")
    target.check()
    with pytest.raises(ModuleNotFoundError) as info:
        target.run()
    assert info.value.name == "chpkg_missing_dependency"
    with pytest.raises(ModuleNotFoundError):
        Target("module", "chpkg.broken").run()


def test_user_exception_propagates(pkg):
    with pytest.raises(ValueError, match="boom from fails"):
        Target("function", "chpkg.tool:fails").run()


@pytest.mark.parametrize("args, status", [((), None), (("0",), None), (("4",), 4)])
def test_sys_exit(pkg, args, status):
    target = Target("module", "chpkg.exits", args)
    if status is None:
        target.run()  # sys.exit() / sys.exit(0) is success
    else:
        with pytest.raises(TargetExit) as info:
            target.run()
        assert info.value.status == status
        assert str(info.value) == "target exited with status 4"


def test_sys_exit_with_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "m.py", "import sys\nsys.exit('bad config')\n")
    with pytest.raises(TargetExit, match=r"^target exited with message 'bad config'$"):
        Target("script", "m.py").run()
