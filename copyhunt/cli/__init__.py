"""The ``copyhunt`` command: thin wiring over the library, and the ONE place that picks exit codes.

One module per subcommand (trace, verify, report, gate, diff, bench). Each command returns an int exit
code; expected failures raise a CopyhuntError subclass, which `main` prints as one line.
"""

from __future__ import annotations

import re
import sys

import typer

from copyhunt.cli.app import app, click_exceptions
from copyhunt.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, CopyhuntError

# Importing a command module registers its command on `app`.
from copyhunt.cli import trace_cmd, verify_cmd, report_cmd, gate_cmd, diff_cmd, bench_cmd  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code instead of exiting."""
    try:
        result = app(args=argv, prog_name="copyhunt", standalone_mode=False)
    except CopyhuntError as exc:
        print(f"copyhunt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except click_exceptions.UsageError as exc:
        print(usage_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("copyhunt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except click_exceptions.ClickException as exc:
        exc.show(file=sys.stderr)
        return exc.exit_code
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
    """Console-script entry point."""
    sys.exit(main())
