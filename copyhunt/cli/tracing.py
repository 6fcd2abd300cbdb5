"""Trace a target and save the trace: the one runner behind `copyhunt trace` and `copyhunt gate --run`.

`trace_target` checks the target, runs it inside `copyhunt.hunt`, saves the raw trace at once
(paths relative to the project root, ``meta.pending`` naming the analysis to come), then joins the
device events, judges the copies and replaces the file with the analysed trace, and returns a
`TraceRun`. A Ctrl-C while the raw trace is written is held until it is on disk; one during the
analysis stops it and keeps the raw file. A target that raises is never swallowed: its traceback goes
to stderr, the partial trace is saved marked incomplete, and `TraceRun.exit_code` is 3 (130 for Ctrl-C).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import runpy
import secrets
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence, TextIO

from copyhunt.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TARGET_FAILED,
    CopyhuntError,
    OutputExistsError,
    TargetNotFoundError,
)
from copyhunt.attribution import rebase_paths
from copyhunt.cli.progress import phase_progress
from copyhunt.records import Trace
from copyhunt.text import display_path, project_root
from copyhunt.tracefile import save
from copyhunt.selection import Selection
from copyhunt.targets import Target, TargetExit


class TraceRun(NamedTuple):
    """What one traced run produced: the (judged) trace, where it was saved, and the target's failure."""

    trace: Trace
    path: Path
    error: BaseException | None  # the target's exception (KeyboardInterrupt, TargetExit, ...) or None

    @property
    def exit_code(self) -> int:
        """0 when the target finished, 130 when interrupted, 3 when it raised or exited non-zero."""
        if self.error is None:
            return EXIT_OK
        if isinstance(self.error, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        return EXIT_TARGET_FAILED


def default_output(target: Target, directory: str | os.PathLike[str] = ".") -> Path:
    """A fresh ``copyhunt-<target-stem>.<pid>-<random>.json`` in ``directory``, as an absolute path.

    The random part keeps two runs apart that share a PID in different PID namespaces (containers
    writing to one folder); the save is exclusive anyway, so a collision fails instead of clobbering.
    """
    folder = Path(directory).absolute()
    while True:
        path = folder / f"copyhunt-{target.stem}.{os.getpid()}-{secrets.token_hex(4)}.json"
        if not path.exists():
            return path


def resolve_output(output: str | os.PathLike[str] | None, target: Target, force: bool) -> Path:
    """Where the trace goes, absolute (resolved before the program runs: a program that changes
    directory must not move it); an existing ``-o`` file fails (exit 2) unless ``force``."""
    if output is None:
        return default_output(target)
    path = Path(output).absolute()
    if path.is_dir():
        raise OutputExistsError(f"-o {output}: is a directory; give a file name")
    if path.exists() and not force:
        raise OutputExistsError(f"-o {output}: file exists; pass --force to overwrite it")
    return path


def trace_target(
    target: Target,
    output: Path,
    *,
    force: bool = False,
    selection: Selection | None = None,
    focus: Sequence[str] = (),
    hide: Sequence[str] = (),
    device_trace: bool | None = None,
    stack_depth: int = 8,
    stdout_to_stderr: bool = False,
    stderr: TextIO | None = None,
    compiled: str = "compiled",
    verdicts: bool = True,
    max_ops: int | None = None,
    progress: bool = False,
    follow: bool = True,
) -> TraceRun:
    """Run ``target`` under a hunt, save the raw trace, then analyse it and save it again; see the module doc.

    Phases: run, build (records), save-raw (written atomically, ``meta.pending`` naming the analysis
    still to come), device-join, judge, save (the analysed trace replaces the raw one atomically).
    A Ctrl-C while the records are built and first saved is held until the file is written; one
    during analysis stops it and keeps the raw file (exit 130). See docs/cli.md "Interrupting".

    ``device_trace=None`` turns device capture on when CUDA is available. ``stdout_to_stderr`` sends
    the target's own prints to stderr (for ``--json``, whose stdout is only the JSON document).
    ``compiled``: "compiled" (torch.compile'd code stays compiled) or "eager" (``--eager``).
    ``verdicts=False`` (``--no-verdicts``): copies only, no op records, no verdicts (the cheap
    capture). ``max_ops``: ring mode (``--max-ops``). ``progress``: draw progress on stderr for
    long phases (the caller decides: ``copyhunt.cli.progress.progress_wanted``).
    ``follow``: Python child processes hunt into the run folder next to ``output`` (``copyhunt.follow``;
    the trace lists their files in ``meta.children``); False only counts them in the notes.
    Raises CopyhuntError (exit 2) for a missing target or an unusable output path, before running.
    """
    err = stderr if stderr is not None else sys.stderr
    target.check()
    from copyhunt.hunting import hunt  # torch is imported here, not at CLI start-up

    if device_trace is None:
        import torch

        device_trace = bool(torch.cuda.is_available())
    selection = selection or Selection()
    h = hunt(
        kinds=selection.kinds,
        region=selection.region,
        site=selection.site,
        op=selection.op,
        focus=tuple(focus),
        hide=tuple(hide),
        stack_depth=stack_depth,
        device_trace=device_trace,
        compiled=compiled,
        record_ops=verdicts,
        max_ops=max_ops,
    )
    h.defer_device_join = True  # the raw trace is saved before the join
    root = project_root(target.spec if target.kind == "script" else None)
    h.paths_root = root  # relative paths from the start: rebase_paths below then has little left to do
    from copyhunt.follow import FollowConfig, Following, run_folder_for

    following = Following(FollowConfig(
        folder=str(run_folder_for(output).resolve()), follow=follow, device_trace=bool(device_trace),
        stack_depth=stack_depth, focus=tuple(focus), hide=tuple(hide), compiled=compiled,
    ))
    guard = _InterruptGuard(err)
    error: BaseException | None = None
    raised: BaseException | None = None  # what the target itself raised, told apart from the hunt's own errors
    returned: Any = None  # a function target's result: held until the hunt stopped (it is still alive then)
    with _maybe_stdout_to_stderr(stdout_to_stderr), _exit_guard(), _keep_cwd(), following:
        h.start()
        try:
            _phase("run")
            returned = target.run()
        except BaseException as exc:
            raised = exc
        # From here until the raw trace is on disk a Ctrl-C is held, not raised: it would lose the run.
        with guard.holding():
            _phase("build")
            # Hunt.__exit__: stops and builds; a failure of ours never replaces the target's exception.
            h.__exit__(type(raised) if raised is not None else None, raised, None)
    if raised is not None:
        exc = raised
        if isinstance(exc, TargetNotFoundError) or not isinstance(exc, (Exception, KeyboardInterrupt)):
            # `module:function` names a function the module lacks (known only after the import): one
            # line, no trace; GeneratorExit and other oddities are not ours to interpret.
            raise exc
        if isinstance(exc, KeyboardInterrupt):
            print("copyhunt: interrupted; saving the partial trace", file=err)
        elif isinstance(exc, TargetExit):
            if not isinstance(exc.status, int):
                print(exc.status, file=err)  # sys.exit("message") prints its message, as Python does
            print(f"copyhunt: {exc}", file=err)
        else:  # the user's exception: shown in full, never swallowed
            print_user_traceback(exc, err)
        error = _without_frames(exc)
    del returned  # the hunt has stopped: the result kept its storages alive through the final sweep
    built = h.trace if h.trace is not None else Trace()  # stop() built it (or __exit__ left an empty, marked one)
    with guard.holding():
        trace = rebase_paths(_with_children(_describe(built, target, error, selection), following, output), root)
        pending = (("device-join",) if h.device_join_pending else ()) + (("verdicts",) if _judgeable(trace) else ())
        trace = dataclasses.replace(trace, meta=dataclasses.replace(trace.meta, pending=pending))
        with phase_progress(f"saving {display_path(str(output))}", progress, err):
            _phase("save-raw")
            path = _save(trace, output, force)
    if guard.count and error is None:
        error = KeyboardInterrupt()
    if not pending:
        return TraceRun(trace, path, error)
    if guard.count:
        print(f"copyhunt: interrupted; {display_path(str(path))} holds the trace without {_missing(pending)}", file=err)
        return TraceRun(trace, path, error)
    raw, step = trace, "analysing"
    try:
        with guard.raising():
            if "device-join" in pending:
                step = "joining GPU events"
                with phase_progress(step, progress, err):
                    _phase("device-join")
                    trace = h.join_device(trace)
                trace = rebase_paths(trace, root)  # device records carry their launching op's site
            if "verdicts" in pending:
                step = "judging"
                with phase_progress(f"judging {len(trace.copies):,} copies", progress, err):
                    _phase("judge")
                    trace = _judge(trace, err)
            trace = dataclasses.replace(trace, meta=dataclasses.replace(trace.meta, pending=()))
            step = "saving"
            with phase_progress(f"saving {display_path(str(path))}", progress, err):
                _phase("save")
                _save_again(trace, path)
    except KeyboardInterrupt:
        print(f"copyhunt: interrupted while {step}; {display_path(str(path))} holds the trace saved before, without {_missing(pending)}",
              file=err)
        return TraceRun(raw, path, error or KeyboardInterrupt())
    return TraceRun(trace, path, error)


def _judgeable(trace: Trace) -> bool:
    """True when the verdict analysis can run on the trace (every op recorded, or ring mode's window)."""
    return not trace.judged and (trace.meta.ops_complete or (trace.meta.ops_dropped > 0 and bool(trace.ops)))


def _missing(pending: Sequence[str]) -> str:
    """What an unfinished analysis leaves out of the file, in words."""
    words = {"device-join": "GPU timings", "verdicts": "verdicts"}
    return " and ".join(words[p] for p in pending)


class _InterruptGuard:
    """The runner's Ctrl-C policy after the program ended: held while the raw trace is written, raised
    (KeyboardInterrupt) during analysis. Only the main thread can own SIGINT; elsewhere nothing changes."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.count = 0  # Ctrl-Cs held back

    def _held(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            print("copyhunt: Ctrl-C: writing the trace first (it takes seconds), then stopping", file=self.err, flush=True)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """SIGINT is counted, not raised, inside the block."""
        with self._handler(self._held):
            yield

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """SIGINT raises KeyboardInterrupt inside the block (even if the program installed a handler)."""
        with self._handler(signal.default_int_handler):
            yield

    @contextlib.contextmanager
    def _handler(self, handler: Any) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


#: Test hook (tests/test_interrupts.py): ``COPYHUNT_TEST_HOLD=<phase>:<file>`` makes the runner touch
#: ``<file>`` when ``<phase>`` starts and wait there until a Ctrl-C (held phases: until one is held),
#: so a test can send SIGINT at a known phase without timing guesses. Phases: see trace_target.
_HOLD_ENV = "COPYHUNT_TEST_HOLD"


def _phase(name: str) -> None:
    spec = os.environ.get(_HOLD_ENV)
    if not spec:
        return
    phase, _, ready = spec.partition(":")
    if phase != name:
        return
    Path(ready).touch()
    handler = signal.getsignal(signal.SIGINT)
    held = getattr(handler, "__self__", None)
    while True:  # leaves by KeyboardInterrupt, or once a held Ctrl-C was counted
        if isinstance(held, _InterruptGuard) and held.count:
            return
        time.sleep(0.01)


def print_user_traceback(exc: BaseException, file: TextIO) -> None:
    """The exception's traceback as Python would show it without copyhunt in the way.

    Cut: the runner's frames before the user's first frame (CLI, runpy, importlib) and, when an op
    failed under the dispatch mode, the frames the tracer inserted between the user's call and the
    op (torch's mode plumbing and copyhunt.capture). A failure raised inside copyhunt.capture itself
    keeps every frame: that is our bug and must show where it is.
    """
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    frames = list(te.stack)
    start = 0
    while start < len(frames) and _is_runner_frame(frames[start].filename):
        start += 1
    if start == len(frames):
        start = 0
    stop = len(frames)
    capture = next((i for i in range(start, len(frames)) if _in_capture(frames[i].filename)), None)
    if capture is not None and capture < len(frames) - 1:
        stop = capture
        while stop > start and _in_torch(frames[stop - 1].filename):
            stop -= 1
        if stop == start:
            stop = len(frames)
    te.stack = traceback.StackSummary.from_list(frames[start:stop])
    file.write("".join(te.format()))


def _in_capture(filename: str) -> bool:
    """A frame of copyhunt's dispatch capture."""
    return os.path.abspath(filename).startswith(_CAPTURE_DIR)


def _in_torch(filename: str) -> bool:
    """A frame of torch itself (the mode plumbing between the user's call and the op)."""
    torch = sys.modules.get("torch")  # imported by then: the target ran under a hunt
    torch_file = getattr(torch, "__file__", None)
    if not torch_file:
        return False
    return os.path.abspath(filename).startswith(os.path.dirname(os.path.abspath(torch_file)) + os.sep)


def _without_frames(exc: BaseException) -> BaseException:
    """Drop the tracebacks (already printed) so the returned error keeps no frame, hence no tensor, alive."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__traceback__ = None
        e = e.__cause__ or e.__context__
    return exc


def _is_runner_frame(filename: str) -> bool:
    """Frames of copyhunt's own runner (CLI, targets, hunt facade), runpy and the import system."""
    if filename.startswith("<frozen importlib") or filename.startswith("<frozen runpy"):
        return True
    if os.path.abspath(filename) in _STDLIB_RUNNERS:
        return True
    return os.path.abspath(filename) in _RUNNER_FILES


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CAPTURE_DIR = os.path.join(_PACKAGE_DIR, "capture") + os.sep
_STDLIB_RUNNERS = frozenset(os.path.abspath(m.__file__ or "") for m in (runpy, importlib))
_RUNNER_FILES = frozenset(
    os.path.join(_PACKAGE_DIR, *parts)
    for parts in (("targets.py",), ("hunting.py",), ("follow.py",), ("_child.py",), ("cli", "tracing.py"), ("cli", "trace_cmd.py"), ("cli", "gate_cmd.py"),
                  ("cli", "verify_cmd.py"), ("verify", "run.py"))
)


class TargetHardExit(TargetExit):
    """The target called ``os._exit``: the process would have ended there, with no trace and no verdict.

    Raised instead, in the traced process only (a forked child still exits for real), so the partial
    trace is saved and the command fails (exit 3) rather than letting ``os._exit(0)`` pass a gate.
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.args = (f"target called os._exit({status}) before finishing: the trace is incomplete",)


@contextlib.contextmanager
def _keep_cwd() -> Iterator[None]:
    """Back to the runner's directory after the target ran: a program that changed directory must not
    move where copyhunt shows paths from (the output path was made absolute before the run)."""
    cwd = os.getcwd()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.chdir(cwd)


@contextlib.contextmanager
def _exit_guard() -> Iterator[None]:
    """Turn ``os._exit`` in this process into TargetHardExit while the target runs."""
    real_exit, pid = os._exit, os.getpid()

    def guarded_exit(status: int) -> None:
        if os.getpid() != pid:  # a forked child (multiprocessing, os.fork): leave it alone
            real_exit(status)
        raise TargetHardExit(status)

    os._exit = guarded_exit  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real_exit


@contextlib.contextmanager
def _maybe_stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """While the target runs, send everything it writes to stdout to stderr (``--json``: stdout is only
    the JSON document). File descriptor 1 itself is redirected, not only ``sys.stdout``: ``os.write(1,
    ...)``, subprocesses and C ``printf`` write there too. Restored afterwards."""
    if not enabled:
        yield
        return
    _flush_stdout()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all (closed): only the Python-level redirect
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush_stdout()
        os.dup2(saved, 1)
        os.close(saved)


def _flush_stdout() -> None:
    """Flush Python's and C's stdout buffers (what the target printed goes where fd 1 pointed then)."""
    for stream in (sys.stdout, sys.__stdout__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to flush (not POSIX)
        pass


def _describe(trace: Trace, target: Target, error: BaseException | None, selection: Selection) -> Trace:
    """Fill what only the runner knows: the target, its argv, why the run is incomplete."""
    meta = trace.meta
    changes: dict[str, Any] = {}
    if meta.target is None:
        changes["target"] = target.display
    if not meta.argv:
        changes["argv"] = target.argv
    if error is not None and meta.complete:
        changes["complete"] = False
    if error is not None and (not meta.error or isinstance(error, TargetExit)):
        # The hunt saw an exception class; "target exited with status 5" says what happened.
        changes["error"] = _one_line(error)
    if not changes:
        return trace
    return dataclasses.replace(trace, meta=dataclasses.replace(meta, **changes))


def _with_children(trace: Trace, following: Any, output: Path) -> Trace:
    """The children's trace files (relative to the parent's folder) and what was not followed, in meta."""
    children = following.child_files(output.parent.resolve())
    notes = following.notes()
    if not children and not notes:
        return trace
    meta = dataclasses.replace(trace.meta, children=children, notes=trace.meta.notes + tuple(notes))
    return dataclasses.replace(trace, meta=meta)


def _one_line(error: BaseException) -> str:
    """``ValueError: boom`` (first line only), or ``interrupted (Ctrl-C)``."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, TargetExit):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _judge(trace: Trace, err: TextIO) -> Trace:
    """Verdicts on every copy; if the analysis itself fails, keep the unjudged trace and say so."""
    from copyhunt.analysis import ensure_judged

    judged = ensure_judged(trace)  # an analysis bug must not lose the user's trace: it leaves a note
    if not judged.judged and judged.meta.ops_complete:
        print(f"copyhunt: warning: {judged.meta.notes[-1]}", file=err)
    return judged


def _save_again(trace: Trace, path: Path) -> None:
    """Replace the raw trace this run saved with the analysed one (atomically: either file stays whole)."""
    try:
        save(trace, path, overwrite=True)
    except OSError as exc:
        raise CopyhuntError(f"cannot write the trace to {path}: {exc.strerror or exc}") from None


def _save(trace: Trace, output: Path, force: bool) -> Path:
    """Save atomically; a file that appeared meanwhile is still never overwritten without --force."""
    try:
        return save(trace, output, overwrite=force)
    except FileExistsError:
        raise OutputExistsError(f"-o {output}: file exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CopyhuntError(f"cannot write the trace to {output}: {exc.strerror or exc}") from None

