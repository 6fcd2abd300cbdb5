"""The one site chooser: the innermost frame of the wanted rank, else the innermost candidate.

Which frames may be a site depends on where a stack comes from, so the choice takes a *rule object*
per source (``rank(filename) -> SKIP | CANDIDATE | FOCUSED`` and ``wanted``, the rank that ends the
search at once):

- live frames of the traced program (the dispatch capture, per op): ``copyhunt.attribution.SiteRule``,
  or :class:`OutsideCopyhunt` when no rule is injected;
- stacks of :class:`copyhunt.records.Frame` (built after a hunt) and Kineto ``python_function`` stacks
  (``copyhunt.attribution.KinetoSiteRule``): :func:`choose_index` over their file names.

:func:`choose` is the rule itself; :meth:`SiteChooser.live` walks live frames with it (ranks cached
per code object, since it runs for every op) and :meth:`SiteChooser.index` ranks file names.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol, Sequence

#: Ranks a rule gives a frame.
SKIP, CANDIDATE, FOCUSED = 0, 1, 2

#: Frames walked at most from the op toward the caller (a deeper site is not searched for).
MAX_DEPTH = 64

_PKG_DIR = __file__.rsplit("/", 2)[0] + "/"  # .../copyhunt/


class Rule(Protocol):
    """What the chooser asks of a rule object."""

    wanted: int

    def rank(self, filename: str) -> int:
        """SKIP, CANDIDATE or FOCUSED for a frame in ``filename``."""


class OutsideCopyhunt:
    """The rule when none is injected: any frame outside copyhunt is a site."""

    wanted = CANDIDATE

    def rank(self, filename: str) -> int:
        """CANDIDATE for a possible site, SKIP for copyhunt's own frames."""
        return SKIP if filename.startswith(_PKG_DIR) else CANDIDATE


def choose(ranks: Iterable[int], wanted: int) -> int | None:
    """Index of the site among frames ranked innermost first: the first of rank ``>= wanted``, else the first candidate."""
    fallback: int | None = None
    for i, r in enumerate(ranks):
        if r >= wanted:
            return i
        if r and fallback is None:
            fallback = i
    return fallback


def choose_index(rule: Rule, files: Sequence[str]) -> int | None:
    """Index of the site in a stack of file names (innermost first), or None when none qualifies."""
    return choose(map(rule.rank, files), rule.wanted)


class SiteChooser:
    """The chooser over live frames for one capture: ranks cached per code object."""

    def __init__(self, rule: Rule | None = None) -> None:
        self.rule: Rule = rule if rule is not None else OutsideCopyhunt()
        self.wanted = self.rule.wanted
        # id(code) -> (code, rank). Keyed by id: hashing a code object rehashes its bytecode. The
        # entry keeps the code object alive, so its id cannot be reused meanwhile.
        self._codes: dict[int, tuple[Any, int]] = {}

    def rank_code(self, code: Any) -> int:
        """The rule's rank of a code object's file (cached)."""
        e = self._codes.get(id(code))
        if e is None or e[0] is not code:
            e = self._codes[id(code)] = (code, self.rule.rank(code.co_filename))
        return e[1]

    def live(self, frame: Any) -> Any:
        """The site among ``frame`` and its callers (:func:`choose` on their ranks), or None."""
        # The innermost frame is the site for most ops (user code calling torch directly): decided
        # without building the walk.
        if frame is None:
            return None
        code = frame.f_code
        e = self._codes.get(id(code))
        r = e[1] if e is not None and e[0] is code else self.rank_code(code)
        if r >= self.wanted:
            return frame
        frames: list[Any] = []
        i = choose(self._walk(frame, frames), self.wanted)  # stops at the first frame of the wanted rank
        return None if i is None else frames[i]

    def _walk(self, frame: Any, frames: list[Any]) -> Iterator[int]:
        f = frame
        while f is not None and len(frames) < MAX_DEPTH:
            frames.append(f)
            yield self.rank_code(f.f_code)
            f = f.f_back

    def index(self, files: Sequence[str]) -> int | None:
        """:func:`choose_index` with this chooser's rule."""
        return choose_index(self.rule, files)
