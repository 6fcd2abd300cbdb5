"""Following child processes: each Python child of a traced program hunts into its own trace file.

How (docs/multiprocess.md): the parent sets ``COPYHUNT_FOLLOW`` (a JSON document: the run folder
and the hunt's options) and patches three process-wide entry points while the target runs:

- ``multiprocessing.process.BaseProcess._bootstrap``: the first thing every ``multiprocessing`` child
  runs, whatever the start method. A ``fork`` child inherits the patch (and the parent's running hunt,
  which it sets aside); a ``spawn`` child gets it from ``import copyhunt._child`` put in front of the
  ``-c`` program ``multiprocessing.spawn.get_command_line`` builds; the ``forkserver`` imports
  ``copyhunt._child`` as a preload module, so the children it forks have it too.
- ``subprocess.Popen``: a child whose program is a Python interpreter (``python``, ``python3.11``,
  ``sys.executable``) running a script, ``-m module`` or ``-c code`` is started as
  ``python [its flags] -m copyhunt._child <the rest>`` instead (torchrun starts its ranks this way).
  Other programs run as they are; they are counted in the parent's notes.

No ``sitecustomize`` and no ``.pth`` file: nothing is installed, and a child started with its own
environment that lacks ``COPYHUNT_FOLLOW`` simply runs untraced.

Each child writes ``rank<R>.json`` (a torch.distributed rank: ``RANK`` in its environment) or
``pid<N>.json`` into the run folder. The file is claimed when the child starts, holding an empty trace
marked incomplete, and replaced atomically when the child ends; on a SIGTERM (``Pool.terminate``,
torchrun stopping the other ranks) the handler saves the trace where the signal found the child, then
the child ends by SIGTERM's default action, as it would untraced. A child that is killed
outright leaves that placeholder: a readable file that says the process did not finish, never a
corrupt one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, Callable

from copyhunt.records import Trace, TraceMeta
from copyhunt.tracefile import dumps, save

#: The environment variable that tells a child to hunt, and how.
ENV = "COPYHUNT_FOLLOW"

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What the placeholder of a child says until the child replaces it with its trace.
KILLED = "the process ended before copyhunt saved its trace (killed, or it left through os._exit)"


@dataclass(frozen=True)
class FollowConfig:
    """What a child needs to hunt like its parent: the run folder and the hunt's options."""

    folder: str  # absolute path of the run folder
    follow: bool = True  # False: children are only counted (``--no-follow``)
    device_trace: bool = False
    stack_depth: int = 8
    focus: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    compiled: str = "compiled"

    def to_env(self) -> str:
        """The JSON text for ``COPYHUNT_FOLLOW``."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: Any = None) -> "FollowConfig | None":
        """The configuration in ``environ`` (default ``os.environ``), or None when there is none."""
        raw = (os.environ if environ is None else environ).get(ENV)
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            return cls(
                folder=str(doc["folder"]), follow=bool(doc.get("follow", True)),
                device_trace=bool(doc.get("device_trace", False)), stack_depth=int(doc.get("stack_depth", 8)),
                focus=tuple(doc.get("focus") or ()), hide=tuple(doc.get("hide") or ()),
                compiled=str(doc.get("compiled", "compiled")),
            )
        except (ValueError, KeyError, TypeError):
            return None


def run_folder_for(output: str | os.PathLike[str]) -> Path:
    """The run folder of a trace file: ``copyhunt-x.123.json`` -> ``copyhunt-x.123/`` (else ``<name>.children/``)."""
    path = Path(output)
    return path.with_suffix("") if path.suffix == ".json" else path.with_name(path.name + ".children")


# --- counting and patching (parent and children alike) --------------------------------------------

#: Children this process started, by how they were handled ("followed", "python-not-followed", "other").
started: Counter[str] = Counter()

_installed: list[Callable[[], None]] = []  # undo functions, last first


def install() -> None:
    """Patch the process-start entry points (idempotent); :func:`uninstall` undoes it."""
    if _installed:
        return
    import multiprocessing.process as mp_process
    import multiprocessing.spawn as mp_spawn
    import subprocess

    orig_bootstrap = mp_process.BaseProcess._bootstrap
    orig_start = mp_process.BaseProcess.start
    orig_cmd = mp_spawn.get_command_line
    orig_popen = subprocess.Popen.__init__

    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        config = FollowConfig.from_env()
        if config is None or not config.follow or getattr(self, "_copyhunt_internal", False):
            return orig_bootstrap(self, *args, **kwargs)
        child = ChildHunt(config, target=f"multiprocessing {self.name}")
        with child:
            child.release()
            code = orig_bootstrap(self, *args, **kwargs)
            child.exit_code = code
        return code

    def start(self: Any) -> None:
        config = FollowConfig.from_env()
        if config is not None:
            if _started_by_compiler():
                self._copyhunt_internal = True  # travels with the process object (fork and pickling alike)
            else:
                started["followed" if config.follow else "python-not-followed"] += 1
        return orig_start(self)

    def get_command_line(**kwds: Any) -> list[str]:
        cmd = orig_cmd(**kwds)
        if FollowConfig.from_env() is not None and "-c" in cmd:
            i = cmd.index("-c") + 1
            cmd = [*cmd[:i], "import copyhunt._child; " + cmd[i], *cmd[i + 1:]]
        return cmd

    def popen_init(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        environ = kwargs.get("env")
        config = FollowConfig.from_env(environ if environ is not None else os.environ)
        if config is not None and not _started_by_compiler():
            rewritten = None
            if config.follow and not kwargs.get("shell") and kwargs.get("executable") is None and not rest:
                rewritten = python_child_args(args)
            if rewritten is not None:
                args = rewritten
                started["followed"] += 1
            else:
                started["python-not-followed" if python_child_args(args) is not None else "other"] += 1
        orig_popen(self, args, *rest, **kwargs)

    mp_process.BaseProcess._bootstrap = _bootstrap  # type: ignore[method-assign]
    mp_process.BaseProcess.start = start  # type: ignore[method-assign]
    mp_spawn.get_command_line = get_command_line
    subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]
    _installed.append(lambda: setattr(subprocess.Popen, "__init__", orig_popen))
    _installed.append(lambda: setattr(mp_spawn, "get_command_line", orig_cmd))
    _installed.append(lambda: setattr(mp_process.BaseProcess, "start", orig_start))
    _installed.append(lambda: setattr(mp_process.BaseProcess, "_bootstrap", orig_bootstrap))
    _preload_in_forkserver()


def uninstall() -> None:
    """Undo :func:`install`."""
    while _installed:
        _installed.pop()()


def _preload_in_forkserver() -> None:
    """Make the forkserver (started later, from this environment) import the hooks before it forks."""
    try:
        from multiprocessing import forkserver
    except ImportError:  # platforms without it
        return
    server = getattr(forkserver, "_forkserver", None)
    modules = getattr(server, "_preload_modules", None)
    if isinstance(modules, list) and "copyhunt._child" not in modules:
        modules.append("copyhunt._child")
        _installed.append(lambda: modules.remove("copyhunt._child") if "copyhunt._child" in modules else None)


#: Callers whose child processes are the compiler's own helpers (Inductor's compile workers and ISA
#: probes, C++ extension builds, Triton's tool calls): they run no code of the traced program, so they
#: are neither followed nor noted. DataLoader workers (torch/utils/data) run the program's code: followed.
_COMPILER_PARTS = (("torch", "_inductor"), ("torch", "_dynamo"), ("torch", "utils", "cpp_extension.py"), ("triton",))


def _started_by_compiler() -> bool:
    """True when the first caller outside the standard library and copyhunt is a compiler part."""
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        name = f.f_code.co_filename
        path = os.path.abspath(name)
        if not (name.startswith("<") or path.startswith(_OWN_DIR) or _in_stdlib(path)):
            parts = tuple(path.split(os.sep))
            return any(parts[i:i + len(want)] == want for want in _COMPILER_PARTS for i in range(len(parts)))
        f = f.f_back
    return False


_STDLIB = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
_OWN_DIR = os.path.join(_PACKAGE_ROOT, "copyhunt") + os.sep
_FOLLOW_PY = os.path.abspath(__file__)
_CHILD_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")


def _in_stdlib(path: str) -> bool:
    return path.startswith(_STDLIB) and "site-packages" not in path and "dist-packages" not in path


_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$")
_FLAGS = set("bBdEhiIOqsSuvx") | {"OO", "bb"}
_FLAGS_WITH_VALUE = {"-W", "-X"}
_UNSAFE = {"-I", "-E", "-S", "-i", "-h", "-x"}  # isolated / no site / interactive: leave the child alone


def python_child_args(args: Any) -> list[str] | None:
    """``args`` of a Python child rewritten to run under ``copyhunt._child``, or None if it is not one.

    ``[python, -u, script.py, a]`` -> ``[python, -u, -m, copyhunt._child, script.py, a]``; the same
    for ``-m module`` and ``-c code``. Anything else (another program, ``-`` or no program, flags this
    cannot read) is None: the child runs unchanged.
    """
    if isinstance(args, (str, bytes, os.PathLike)) or not isinstance(args, (list, tuple)) or not args:
        return None
    argv = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else a for a in args]
    if not all(isinstance(a, str) for a in argv):
        return None
    exe = argv[0]
    if not (_PYTHON.match(os.path.basename(exe)) or _same_file(exe, sys.executable)):
        return None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in _UNSAFE:
            return None
        if a in ("-c", "-m"):
            break
        if a in _FLAGS_WITH_VALUE:
            i += 2
            continue
        if a[:2] in _FLAGS_WITH_VALUE and len(a) > 2:
            i += 1
            continue
        if a.startswith("-"):
            if a == "-" or a.startswith("--") or not set(a[1:]) <= _FLAGS or set(a[1:]) & {c[1] for c in _UNSAFE}:
                return None
            i += 1
            continue
        break  # the script
    if i >= len(argv) or (argv[i] in ("-c", "-m") and i + 1 >= len(argv)):
        return None
    return [*argv[:i], "-m", "copyhunt._child", *argv[i:]]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


# --- the parent ------------------------------------------------------------------------------------


class Following:
    """Context manager of the traced parent: children hunt into ``folder`` (or are only counted)."""

    def __init__(self, config: FollowConfig) -> None:
        self.config = config
        self._saved_env: dict[str, str | None] = {}
        self._before: Counter[str] = Counter()

    def __enter__(self) -> "Following":
        self._saved_env = {k: os.environ.get(k) for k in (ENV, "PYTHONPATH")}
        os.environ[ENV] = self.config.to_env()
        if "site-packages" not in _PACKAGE_ROOT and "dist-packages" not in _PACKAGE_ROOT:
            # A spawned child must import copyhunt as this process does (a source checkout, say).
            paths = [p for p in (os.environ.get("PYTHONPATH") or "").split(os.pathsep) if p]
            if _PACKAGE_ROOT not in paths:
                os.environ["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, *paths])
        self._before = started.copy()
        install()
        return self

    def __exit__(self, *exc: Any) -> None:
        uninstall()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def counts(self) -> Counter[str]:
        """Children started while following, by how they were handled."""
        return started - self._before

    def child_files(self, relative_to: str | os.PathLike[str]) -> tuple[str, ...]:
        """The children's trace files in the run folder, relative to ``relative_to`` (the parent file's folder)."""
        folder = Path(self.config.folder)
        if not folder.is_dir():
            return ()
        files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
        return tuple(os.path.relpath(p, relative_to) for p in files)

    def notes(self) -> list[str]:
        """What the parent's trace says about its children."""
        n = self.counts()
        out = []
        if n["python-not-followed"]:
            out.append(f"{_processes(n['python-not-followed'])} started and not followed (--no-follow): "
                       "their copies are not in this trace")
        if n["other"]:
            out.append(f"{_processes(n['other'])} started that copyhunt cannot follow (not a Python script, "
                       "-m module or -c program it can run): their copies are not in this trace")
        return out


def _processes(n: int) -> str:
    return f"{n} child process" if n == 1 else f"{n} child processes"


# --- a child ---------------------------------------------------------------------------------------


class ChildHunt:
    """A child's own hunt: claim its file, set aside a hunt inherited by fork, hunt, save on the way out.

    SIGTERM (``Pool.terminate``, torchrun stopping the other ranks) is handled without unwinding the
    program: the handler saves the trace where the signal found the process and then ends it by the
    default action, as the untraced program would have ended (killed by SIGTERM). Raising an exception
    from the handler instead would land at an arbitrary point (``multiprocessing``'s bootstrap, the
    forkserver's loop, ``__exit__`` itself before its first line) and could skip the save.
    """

    def __init__(self, config: FollowConfig, target: str) -> None:
        self.config = config
        self.target = target
        self.exit_code: int | None = None
        self.path: Path | None = None
        self._hunt: Any = None
        self._prev_sigterm: Any = None
        self._saved = False

    def __enter__(self) -> "ChildHunt":
        """Claim the file and start the hunt with SIGTERM held back; the ``with`` body's first statement
        must be :meth:`release`, which lets a SIGTERM that arrived meanwhile end the process."""
        global _critical
        _critical = True  # a SIGTERM now waits until the hunt runs (it would leave the placeholder)
        try:
            self._enter()
        except BaseException:
            _critical = False
            raise
        return self

    def release(self) -> None:
        """Let SIGTERM through again; one that arrived while starting saves the (empty, complete) trace
        and ends the process now, as it would have ended untraced."""
        global _critical
        _critical = False
        if _pending:
            _terminate_now(self)

    def _enter(self) -> None:
        global _child
        from copyhunt.hunting import describe_process, hunt, running_hunt

        inherited = running_hunt()
        if inherited is not None:
            inherited.forget_after_fork()
        # The handler goes in before the placeholder is claimed: a SIGTERM from here on is held back
        # (_critical) instead of ending the process on its default action with the placeholder left
        # behind, which would read as "killed" although no work was cut short (Pool.terminate() right
        # after a map can reach a worker that is still starting).
        self._install_sigterm()
        facts = describe_process()
        started.clear()  # a forked child starts counting its own children
        self.path = claim(Path(self.config.folder), facts, self.target)
        c = self.config
        # Everything the save needs is imported now: the handler may interrupt an import.
        import copyhunt.analysis  # noqa: F401

        self._hunt = hunt(focus=c.focus, hide=c.hide, stack_depth=c.stack_depth, device_trace=c.device_trace, compiled=c.compiled)
        self._hunt.start()
        _child = self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        global _critical, _child
        _critical = True  # saving: a SIGTERM now must not cut the trace short (the process ends right after)
        try:
            if not self._saved:
                self._save(exc)
        finally:
            _child = None
            _critical = False
            self._restore_sigterm()
            if _pending:
                _die()  # held back while saving: the process ends as asked, its trace saved

    def _save(self, exc: BaseException | None, *, terminated: bool = False) -> None:
        self._saved = True
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            exc = None  # sys.exit(0): the program finished
        trace = self._hunt.stop(exc)
        error = None
        notes = trace.meta.notes
        if terminated and _idle_terminated:
            notes += ("stopped by SIGTERM while idle, starting or ending (e.g. Pool.terminate() after its work): "
                      "no work was cut short",)
        elif terminated:
            error = "terminated (SIGTERM)" + (f" in {_sigterm_where}" if _sigterm_where else "")
        elif exc is not None:
            error = _one_line(exc)  # the program's own failure
        elif self.exit_code not in (None, 0):
            error = f"process exited with status {self.exit_code}"
        meta = replace(trace.meta, target=self.target, argv=tuple(sys.argv),
                       complete=error is None, error=error, notes=notes)
        trace = replace(trace, meta=meta)
        try:
            from copyhunt.analysis import ensure_judged

            trace = ensure_judged(trace)
        except Exception:  # noqa: BLE001 - an analysis bug must not lose the child's trace
            pass
        assert self.path is not None
        save(trace, self.path, overwrite=True)

    def _save_terminated(self) -> None:
        """Save from the SIGTERM handler (best effort: a failure leaves a readable file saying why)."""
        if self._saved or self.path is None:
            return
        try:
            self._save(None, terminated=True)
        except BaseException as exc:  # noqa: BLE001 - the process ends next whatever happened
            try:
                where = f" in {_sigterm_where}" if _sigterm_where else ""
                meta = TraceMeta(target=self.target, complete=False,
                                 error=f"terminated (SIGTERM){where}; copyhunt could not save its trace: {_one_line(exc)}")
                save(Trace(meta=meta), self.path, overwrite=True)
            except BaseException:  # noqa: BLE001 - the placeholder stays
                pass

    def _install_sigterm(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._prev_sigterm = signal.signal(signal.SIGTERM, _terminated)

    def _restore_sigterm(self) -> None:
        if self._prev_sigterm is not None:
            signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._prev_sigterm = None


_child: ChildHunt | None = None  # the running child hunt the SIGTERM handler saves
_sigterm_where = ""  # where the SIGTERM found the process (its innermost Python frame)
_idle_terminated = False  # the SIGTERM cut no work short (idle Pool worker, starting, ending): complete
_critical = False  # starting or saving the child's hunt: a SIGTERM is held back
_pending = False  # a SIGTERM arrived while held back


def _idle(frame: FrameType | None) -> bool:
    """True when the SIGTERM cut none of the program's work short: a ``multiprocessing.Pool`` worker
    that is not running a task (``Pool.terminate()``, and so ``with Pool() as p:``, stops workers
    waiting for their next task, or still starting, or already leaving), or a ``multiprocessing``
    child before or after its ``run()``."""
    import linecache

    pool_py = os.path.join("multiprocessing", "pool.py")
    process_py = os.path.join("multiprocessing", "process.py")
    while frame is not None:
        code = frame.f_code
        if code.co_name == "worker" and code.co_filename.endswith(pool_py):
            return "func(*args, **kwds)" not in linecache.getline(code.co_filename, frame.f_lineno)
        if code.co_name == "_bootstrap" and code.co_filename.endswith(process_py):
            return "self.run()" not in linecache.getline(code.co_filename, frame.f_lineno)
        if code.co_name in ("_bootstrap", "__enter__", "__exit__", "release") and os.path.abspath(code.co_filename) == _FOLLOW_PY:
            return True  # copyhunt's own frames outside the program (multiprocessing's bootstrap has returned)
        if os.path.abspath(code.co_filename) == _CHILD_PY:
            return code.co_name != "_run"  # python -m copyhunt._child: before or after running the program
        frame = frame.f_back
    return False


def _terminated(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler: save the trace where the signal found the process, then end it by the
    default action (held back while the hunt starts or saves)."""
    global _pending, _idle_terminated, _sigterm_where
    if not _pending:
        _idle_terminated = _critical or _idle(frame)
        if frame is not None:
            _sigterm_where = f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})"
    if _critical:
        _pending = True
        return
    if _child is not None:
        _terminate_now(_child)
    _die()


def _terminate_now(child: ChildHunt) -> None:
    """Save ``child``'s trace as terminated and end the process; a second SIGTERM ends it at once."""
    global _critical
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    _critical = True
    child._save_terminated()
    _die()


def _die() -> None:
    """End the process as SIGTERM's default action does (the parent sees it killed by SIGTERM)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    except (AttributeError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)  # not reached where SIGTERM kills


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"process exited with status {exc.code}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def claim(folder: Path, facts: dict[str, Any], target: str) -> Path:
    """Create this process's trace file, exclusively and whole: a placeholder trace marked incomplete.

    ``rank<R>.json`` for a rank (``rank<R>.pid<N>.json`` when its own child has inherited the rank),
    else ``pid<N>.json``. Written to a temporary file and linked into place, so the name is never taken
    twice and the file is never half-written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pid = facts["pid"]
    names = [f"rank{facts['rank']}.json", f"rank{facts['rank']}.pid{pid}.json"] if facts.get("rank") is not None else []
    names.append(f"pid{pid}.json")
    placeholder = Trace(meta=TraceMeta(target=target, complete=False, error=KILLED, **facts))
    fd, tmp = tempfile.mkstemp(prefix=".claim.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(placeholder) + "\n")
        for name in names:
            try:
                os.link(tmp, folder / name)
                return folder / name
            except FileExistsError:
                continue
        path = folder / names[-1]  # a reused pid: the older file is replaced
        os.replace(tmp, path)
        return path
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

