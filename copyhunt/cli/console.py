"""The consoles the commands print with: every one shows text from traces, budgets and programs as data."""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Optional

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from copyhunt.report import Format
from copyhunt.text import INVISIBLE, visible


class DataConsole(Console):
    """A rich Console that never interprets the text it is given.

    Rich markup (``[bold]``, ``[link=...]``) and emoji codes (``:b:`` in ``x[a:b:2]``) are off, and
    every segment of output passes through ``copyhunt.text.visible`` right before it is written, so an
    ESC, OSC 8 hyperlink or bidi mark in a trace's file name, a budget's rule name or a program's
    message reaches the terminal as visible characters, whichever renderer drew it and whether the
    output is a terminal or a pipe. Styles copyhunt sets itself still colour a terminal.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        kwargs.setdefault("highlight", False)
        super().__init__(**kwargs)

    def render(self, renderable: RenderableType, options: Optional[ConsoleOptions] = None) -> Iterable[Segment]:
        """Rich's rendering, with control characters in text made visible (newlines kept: they are layout)."""
        for seg in super().render(renderable, options):
            if seg.control is None and seg.text and INVISIBLE.search(seg.text):
                yield Segment(visible(seg.text, keep_newlines=True), seg.style, None)
            else:
                yield seg


class PipeSafeConsole(DataConsole):
    """A DataConsole on stdout that survives a closed pipe (``copyhunt report t.json | head``).

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


def stderr_console(**kwargs: Any) -> Console:
    """A console on stderr (progress, messages), as safe with untrusted text as stdout's."""
    return DataConsole(stderr=True, **kwargs)


def console_for(fmt: Format) -> Console:
    """stdout console; JSON and GitHub output are plain text that must never wrap or carry colour."""
    if fmt is Format.text:
        return stdout_console(file=sys.stdout)
    return stdout_console(file=sys.stdout, no_color=True, force_terminal=False, width=10_000, soft_wrap=True)
