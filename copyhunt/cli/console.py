"""The consoles the commands print with."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

from copyhunt.report import Format


class PipeSafeConsole(Console):
    """A rich Console that survives a closed pipe (``copyhunt report t.json | head``).

    rich's default turns a broken pipe into ``SystemExit(1)``, and 1 means "over budget" here. Instead
    the rest of the output is dropped and the command goes on, so its exit code still says what it
    found (a gate over budget stays 1, a report 0).
    """

    def on_broken_pipe(self) -> None:
        """Send the rest of stdout to /dev/null and carry on."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def stdout_console(**kwargs: Any) -> Console:
    """A console on stdout for a command's output."""
    return PipeSafeConsole(**kwargs)


def console_for(fmt: Format) -> Console:
    """stdout console; JSON and GitHub output are plain text that must never wrap or carry colour."""
    if fmt is Format.text:
        return stdout_console(file=sys.stdout)
    return stdout_console(file=sys.stdout, no_color=True, force_terminal=False, width=10_000, soft_wrap=True)
