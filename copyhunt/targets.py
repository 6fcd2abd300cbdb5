"""What `copyhunt trace` runs: a script path, ``-m package.module`` or ``package.module:function``.

A target is parsed and checked (`parse_target` then `Target.check`) before any tracing starts, so a
missing script, module or function fails with one line (`TargetNotFoundError`, exit 2) and no trace.
`Target.run` then executes it the way Python itself would (``python script.py``, ``python -m``),
inside whatever the caller wraps around it (the hunt). The user's own exceptions - an ImportError
raised inside their module included - propagate untouched with their traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import runpy
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from copyhunt.errors import TargetNotFoundError

#: The target `copyhunt trace` runs when none is given: the bundled MoE demo (baseline path).
DEFAULT_TARGET = "copyhunt_moe.demo:baseline"

_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class TargetExit(Exception):
    """The target called ``sys.exit`` with a non-zero status: a failure, like an exception."""

    def __init__(self, status: Any) -> None:
        self.status = status
        # sys.exit("message") prints the message and exits 1, as Python itself does.
        what = f"status {status}" if isinstance(status, int) else f"message {str(status)!r}"
        super().__init__(f"target exited with {what}")


@dataclass(frozen=True)
class Target:
    """A parsed target: ``kind`` is "script", "module" or "function"; ``spec`` is what the user wrote."""

    kind: str
    spec: str
    args: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """How the target is named in tables and trace metadata (``-m`` kept for modules)."""
        return f"-m {self.spec}" if self.kind == "module" else self.spec

    @property
    def argv(self) -> tuple[str, ...]:
        """``sys.argv`` as the target will see it (``sys.argv[0]`` as Python would set it)."""
        return (self.spec, *self.args)

    @property
    def stem(self) -> str:
        """A short, file-name-safe name for the default trace file (``copyhunt-<stem>.<pid>.json``)."""
        if self.kind == "script":
            path = Path(self.spec)
            raw = path.name if path.is_dir() else path.stem
        else:
            raw = self.spec.replace(":", ".")
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "target"

    def check(self) -> None:
        """Raise TargetNotFoundError (one line) if the script / module cannot be found.

        A ``module:function`` target's function is checked by `run` (after the import, which is
        part of the traced program); modules are located with ``find_spec``, which imports parent
        packages only, as ``python -m`` does.
        """
        if self.kind == "script":
            path = Path(self.spec)
            if not path.exists():
                raise TargetNotFoundError(f"no such script: {self.spec}")
            if path.is_dir() and not (path / "__main__.py").exists():
                raise TargetNotFoundError(f"{self.spec} is a directory without __main__.py; give a script path")
            return
        module = self.spec.partition(":")[0]
        with _cwd_on_path():
            spec = _find_spec(module)
            if spec is None:
                raise TargetNotFoundError(f"no module named {module!r} (is it installed, or on sys.path?)")
            if self.kind == "module" and spec.submodule_search_locations is not None:
                # `python -m pkg` runs pkg.__main__; a package without one cannot be run.
                if _find_spec(f"{module}.__main__") is None:
                    raise TargetNotFoundError(f"{module!r} is a package without __main__; cannot run it with -m")

    def run(self) -> Any:
        """Run the target to completion and return what a ``module:function`` target returned (None
        for scripts and modules); ``sys.exit(0)`` counts as success.

        The caller should hold the returned value while the hunt stops: it is what the program hands
        on, and a storage in it is still alive (the verdicts must not call writes into it dead).
        Raises whatever the target raises; a non-zero ``sys.exit`` becomes TargetExit.
        ``sys.argv`` and ``sys.path`` are restored afterwards.
        """
        try:
            if self.kind == "script":
                self._run_script()
            elif self.kind == "module":
                self._run_module()
            else:
                return self._run_function()
        except SystemExit as exc:
            if exc.code is None or exc.code == 0:
                return None
            raise TargetExit(exc.code) from None
        return None

    def _run_script(self) -> None:
        # Like `python script.py` (3.9+): the script's absolute path in tracebacks and __file__, its
        # folder first on sys.path. runpy sets sys.argv[0] to that absolute path too.
        script = os.path.abspath(self.spec)
        folder = script if os.path.isdir(script) else os.path.dirname(script)
        with _sys_state(argv=[script, *self.args], path_head=folder):
            runpy.run_path(script, run_name="__main__")

    def _run_module(self) -> None:
        # Like `python -m`: the current directory first on sys.path; runpy sets argv[0] to the file.
        with _sys_state(argv=[self.spec, *self.args], path_head=os.getcwd()):
            runpy.run_module(self.spec, run_name="__main__", alter_sys=True)

    def _run_function(self) -> Any:
        module_name, _, func_name = self.spec.partition(":")
        with _sys_state(argv=[self.spec, *self.args], path_head=os.getcwd()):
            # The import is part of the traced program: an error inside the module is the user's.
            module = importlib.import_module(module_name)
            func = _resolve_attr(module, func_name)
            if func is None:
                raise TargetNotFoundError(f"module {module_name!r} has no function {func_name!r}")
            if not callable(func):
                raise TargetNotFoundError(f"{self.spec} is not callable ({type(func).__name__})")
            return func()


def parse_target(target: str | None, module: str | None = None, args: Sequence[str] = ()) -> Target:
    """Turn the CLI's TARGET / ``-m MODULE`` / ARGS into a Target; no target means the MoE demo.

    A TARGET naming an existing file or folder is a script; ``a.b:func`` is a function; anything
    else must look like a script path (ends in .py or contains a path separator).
    """
    args = tuple(args)
    if module is not None:
        if not _IDENTIFIER_PATH.match(module):
            raise TargetNotFoundError(f"-m {module!r} is not a module name (expected package.module)")
        # With -m, a positional TARGET is the program's first argument (click fills it first).
        extra = (target,) if target is not None else ()
        return Target("module", module, extra + args)
    if target is None:
        return Target("function", DEFAULT_TARGET, args)
    if os.path.exists(target):
        return Target("script", target, args)
    if ":" in target and not target.endswith(".py"):
        mod, _, func = target.partition(":")
        if _IDENTIFIER_PATH.match(mod) and _IDENTIFIER_PATH.match(func):
            return Target("function", target, args)
        raise TargetNotFoundError(f"{target!r} is not package.module:function")
    if target.endswith(".py") or os.sep in target or "/" in target:
        raise TargetNotFoundError(f"no such script: {target}")
    raise TargetNotFoundError(
        f"{target!r} is neither a script path nor package.module:function (for a module, use -m {target})"
    )


def _resolve_attr(module: Any, dotted: str) -> Any:
    """``module.a.b`` for ``dotted="a.b"`` (``module:Class.method`` works too); None if missing."""
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def _find_spec(name: str) -> Any:
    """``importlib.util.find_spec`` that tells "not found" apart from the user's own import errors."""
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError as exc:
        # Only "a parent package of `name` does not exist" means not found; a parent that imports
        # something missing is the user's error (raised again when the target runs inside the hunt).
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise
    except ValueError:  # a module in sys.modules without __spec__ (e.g. __main__)
        return None


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current directory first on sys.path while looking a module up (as ``python -m`` has it)."""
    with _sys_state(argv=None, path_head=os.getcwd()):
        yield


@contextmanager
def _sys_state(argv: list[str] | None, path_head: str) -> Iterator[None]:
    """Set ``sys.argv`` / prepend ``sys.path`` for the target; restore both afterwards."""
    saved_argv = sys.argv[:]
    saved_path = sys.path[:]
    if argv is not None:
        sys.argv[:] = argv
    sys.path.insert(0, path_head)
    try:
        yield
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path

