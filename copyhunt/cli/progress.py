"""Progress display for the runner's long phases (device join, judging, saving): rich, on stderr.

Shown only on a terminal, after a phase has run for about a second (``DELAY_S``), and never with
``--json``, when stderr is piped or redirected, or under CI (the ``CI`` environment variable set).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Mapping, TextIO

#: A phase shorter than this shows nothing.
DELAY_S = 1.0


def progress_wanted(*, json_output: bool, stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """True when a progress display may be drawn on ``stream`` (see the module doc)."""
    env = os.environ if env is None else env
    if json_output or env.get("CI"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or foreign stream
        return False


@contextlib.contextmanager
def phase_progress(label: str, enabled: bool, stream: TextIO, delay_s: float = DELAY_S) -> Iterator[None]:
    """A spinner with ``label`` and the elapsed time on ``stream`` while the block runs, from ``delay_s`` on.

    Transient: the line is erased when the block ends (or is interrupted).
    """
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(), TextColumn("copyhunt: {task.description}"), TimeElapsedColumn(),
        console=Console(file=stream), transient=True,
    )
    progress.add_task(label, total=None)
    lock = threading.Lock()
    state = {"started": False, "done": False}

    def show() -> None:
        with lock:
            if not state["done"]:
                progress.start()
                state["started"] = True

    timer = threading.Timer(delay_s, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["started"]:
                progress.stop()
