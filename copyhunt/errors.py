"""One exception family for every expected failure; the CLI turns it into exit codes in one place.

Exit codes (stable, documented in README):
    0  success / within budget
    1  over budget, or something grew (gate, diff --fail-on-increase)
    2  bad input: missing file or target, malformed trace or budget, bad flag
    3  the traced target raised, exited early (os._exit) or the trace is incomplete: never a verdict
 70  internal error: a bug in copyhunt (one line and a hint to report it; EX_SOFTWARE)
  130  interrupted (Ctrl-C); the partial trace is still saved
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_BAD_INPUT = 2
EXIT_TARGET_FAILED = 3
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: never 1, which a CI reads as "over budget"
EXIT_INTERRUPTED = 130


class CopyhuntError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = EXIT_BAD_INPUT


class TraceFormatError(CopyhuntError):
    """A trace file is missing, truncated, foreign or from a newer copyhunt."""


class BudgetError(CopyhuntError):
    """A budget file is malformed: names the key and what would be valid."""


class TargetNotFoundError(CopyhuntError):
    """The script, module or function to trace does not exist."""


class OutputExistsError(CopyhuntError):
    """Refusing to overwrite a file the user already has."""


class NoDeviceError(CopyhuntError):
    """A GPU-only action was asked for on a machine without one."""


class IncompleteTraceError(CopyhuntError):
    """The gate got no complete trace (the target exited early, was killed, or the file is partial)."""

    exit_code = EXIT_TARGET_FAILED
