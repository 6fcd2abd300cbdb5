"""``compiled="eager"`` (``copyhunt trace --eager``): torch.compile'd code runs op by op, and the trace says so.

The hunt's mode then does not ignore compile internals (``dispatch._EagerMode``), so Dynamo skips every
frame it would compile while the hunt runs, and the program runs as if it were not compiled: the old
behaviour. :class:`EagerCompileNote` names the functions that ran that way, for the trace notes, and
gives them back to Dynamo when the hunt stops.
"""

from __future__ import annotations

from typing import Any, Sequence

class EagerCompileNote:
    """Collects the compiled functions Dynamo ran eagerly because the hunt's dispatch mode was active.

    Dynamo marks the code of a frame it skipped "skip from now on" (torch 2.11 and 2.13 alike): without
    care, a compiled function called under an eager hunt would never run compiled again in that
    process. So :meth:`stop` resets those code objects to Dynamo's default (their compiled code, kept
    in Dynamo's cache, runs again on the next call outside the hunt).

    torch >= 2.13 keeps Dynamo's skip reasons per thread (``eval_frame.reset_skip_reasons``). Older
    versions (2.11) only log them, at debug level, from ``torch._dynamo.convert_frame``: there a filter
    on that logger reads them and drops every record the logger would not have emitted before, so the
    user's logging output stays as it was.
    """

    _REASON = "dispatch mode"

    def __init__(self) -> None:
        self._saved: Any = None
        self._mine: list[str] | None = None
        self._log: Any = None
        self._filter: _SkipLogFilter | None = None
        self._level = 0

    def start(self) -> None:
        """Begin collecting (the calling thread)."""
        try:
            import torch._dynamo.eval_frame as ef
        except Exception:  # noqa: BLE001 - no Dynamo: nothing can have been compiled
            return
        tls = getattr(ef, "dynamo_tls", None)
        if tls is not None and hasattr(ef, "get_skip_reasons") and hasattr(tls, "skip_reasons"):
            self._saved = tls.skip_reasons
            self._mine = []
            tls.skip_reasons = self._mine
            return
        import logging

        self._log = logging.getLogger("torch._dynamo.convert_frame")
        self._level = self._log.level
        self._filter = _SkipLogFilter(self._log.getEffectiveLevel(), self._REASON)
        self._log.addFilter(self._filter)
        self._log.setLevel(logging.DEBUG)

    def stop(self) -> list[str]:
        """Stop collecting, un-skip their code; the functions (``name (file:line)``) that ran eagerly."""
        names = self._collect()
        if names:
            _unskip(names)
        return names

    def _collect(self) -> list[str]:
        names: list[str] = []
        if self._mine is not None:
            import torch._dynamo.eval_frame as ef

            tls = ef.dynamo_tls
            current = tls.skip_reasons if isinstance(tls.skip_reasons, list) else []
            # A fullgraph compile resets the list while the hunt runs: read both.
            for reason in [*self._mine, *(current if current is not self._mine else [])]:
                if self._REASON in reason:
                    names.append(reason.split("): ", 1)[0] + ")")
            tls.skip_reasons = self._saved
            self._mine = None
        elif self._filter is not None:
            self._log.removeFilter(self._filter)
            self._log.setLevel(self._level)
            names = self._filter.names
            self._filter = None
        return list(dict.fromkeys(names))


def _unskip(names: Sequence[str]) -> None:
    """Give the code objects named ``name (file[:line])`` back to Dynamo's default strategy."""
    try:
        import torch._dynamo.convert_frame as cf
        from torch._C._dynamo.eval_frame import set_code_exec_strategy
        from torch._dynamo.types import FrameAction, FrameExecStrategy
    except Exception:  # noqa: BLE001 - an unknown Dynamo: nothing to undo that we know of
        return
    wanted = set(names)
    for ref in list(getattr(cf.input_codes, "seen", ())):
        code = ref()
        if code is None:
            continue
        keys = (f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})", f"{code.co_name} ({code.co_filename})")
        if any(k in wanted for k in keys):
            set_code_exec_strategy(code, FrameExecStrategy(FrameAction.DEFAULT, FrameAction.DEFAULT))


class _SkipLogFilter:
    """A logging filter: keeps Dynamo's "skipping: f (reason: ...)" debug lines, drops what was hidden."""

    def __init__(self, threshold: int, reason: str) -> None:
        self.threshold = threshold
        self.reason = reason
        self.names: list[str] = []

    def filter(self, record: Any) -> bool:
        if record.levelno >= self.threshold:
            return True  # the logger emitted these before the hunt: unchanged
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("skipping:") and len(args) >= 3 and self.reason in str(args[1]):
            self.names.append(f"{args[0]} ({args[2]})")
        return False


def eager_notes(functions: Sequence[str]) -> list[str]:
    """The trace notes of an eager (``compiled="eager"``) hunt."""
    if not functions:
        return ["compiled='eager': compiled functions would run op by op (torch.compile ignored); none ran"]
    shown = ", ".join(functions[:5]) + (f" and {len(functions) - 5} more" if len(functions) > 5 else "")
    return [
        f"compiled='eager': {len(functions)} torch.compile'd function(s) ran op by op, not compiled, so their copies "
        f"are those of the uncompiled code: {shown}"
    ]
