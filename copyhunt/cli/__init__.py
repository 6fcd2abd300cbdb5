"""The ``copyhunt`` command: thin wiring over the library, and the ONE place that picks exit codes.

One module per subcommand (trace, verify, report, gate, diff, bench). Each command returns an int exit
code; expected failures raise a CopyhuntError subclass, which `main` prints as one line.
"""

from __future__ import annotations

import os
import re
import sys
import traceback

import typer

from copyhunt.cli.app import app, click_exceptions
from copyhunt.text import visible
from copyhunt.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, CopyhuntError

# Importing a command module registers its command on `app`.
from copyhunt.cli import trace_cmd, verify_cmd, report_cmd, gate_cmd, diff_cmd, bench_cmd  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code instead of exiting."""
    try:
        result = app(args=argv, prog_name="copyhunt", standalone_mode=False)
    except CopyhuntError as exc:
        # One line, shown as data: a message may quote a file name or value from untrusted input.
        print(f"copyhunt: error: {visible(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except click_exceptions.UsageError as exc:
        print(visible(usage_line(exc)), file=sys.stderr)  # a flag's value is shown as data
        return EXIT_BAD_INPUT
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("copyhunt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except click_exceptions.ClickException as exc:
        print(f"copyhunt: error: {_one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug of ours: its own exit code (never 1 = "over budget"), one line
        if os.environ.get("COPYHUNT_DEBUG"):
            traceback.print_exc()
        where = _where(exc)
        print(
            f"copyhunt: internal error: {type(exc).__name__}: {visible(_first_line(exc))}{where}; "
            "please report it to the copyhunt maintainers with the output of COPYHUNT_DEBUG=1 (it shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return int(result or 0)


def usage_line(exc: "click_exceptions.UsageError") -> str:
    """A usage error as one line: ``copyhunt report: error: --by: 'file' is not one of ...``.

    typer's pydantic-flavoured phrases are put in plain words; an unknown option given to ``trace``,
    ``verify`` or ``gate --run`` gets the hint that the program's own arguments go after ``--``.
    """
    ctx = exc.ctx
    where = ctx.command_path if ctx is not None else "copyhunt"
    message = " ".join(exc.format_message().split())
    message = message.replace("Value error, ", "")
    message = re.sub(r"Input should be a valid (\w+)(, .*)?$", r"expected \1", message)
    if isinstance(exc, click_exceptions.NoSuchOption) and ctx is not None and ctx.info_name in ("trace", "verify", "gate"):
        message += f" (to pass it to the program, put it after --: {where} TARGET -- {exc.option_name} ...)"
    return f"{where}: error: {message}"


def run() -> None:
    """Console-script entry point (``copyhunt`` and ``python -m copyhunt``)."""
    code = main()
    if "torch._inductor" in sys.modules:
        exit_after_compile(code)
    sys.exit(code)


def exit_after_compile(code: int) -> None:
    """End the process the way Python's shutdown would, minus the C++ static destructors.

    After a traced program used torch.compile, the interpreter's final teardown sometimes aborts in a C++
    destructor ("terminate called without an active exception", exit -6; about 1 run in 6 on a CPU
    Inductor compile) after copyhunt has saved and printed everything: a CI job would read that as a
    failure. So, once everything is written: wait for non-daemon threads and run atexit callbacks, as
    Python's shutdown does (the program's own handlers still run), flush, and leave with the real code.
    """
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed pipe must not change the exit code
                pass
        os._exit(code)


def _one_line(message: str) -> str:
    """A message as one line of visible text (click's may span lines)."""
    return visible("; ".join(part.strip() for part in message.strip().splitlines() if part.strip()))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else "(no message)"


def _where(exc: BaseException) -> str:
    """`` (at file.py:12)``: the innermost frame, so a report can point at the bug."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    f = tb[-1]
    return f" (at {os.path.basename(f.filename)}:{f.lineno})"
