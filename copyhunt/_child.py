"""A followed child process: ``python -m copyhunt._child (script | -m module | -c code) [args...]``.

``copyhunt.follow`` starts Python children of a traced program this way (and ``import copyhunt._child``
puts its hooks into ``multiprocessing`` spawn children and the forkserver). The child runs its program
as Python would, inside its own hunt (``copyhunt.follow.ChildHunt``), and exits as Python would: 0,
the ``sys.exit`` status, or 1 with the traceback on stderr.
"""

from __future__ import annotations

import sys
from typing import Sequence

from copyhunt import follow

if follow.FollowConfig.from_env() is not None:
    follow.install()  # this process's own children are followed too


def _run(argv: Sequence[str]) -> None:
    """Run the program ``argv`` names, as ``python argv...`` would."""
    if argv[0] == "-c":
        code = argv[1]
        sys.argv[:] = ["-c", *argv[2:]]
        main = sys.modules["__main__"]
        namespace = {"__name__": "__main__", "__builtins__": __builtins__, "__doc__": None, "__spec__": None,
                     "__loader__": getattr(main, "__loader__", None), "__package__": None}
        sys.path.insert(0, "")
        exec(compile(code, "<string>", "exec"), namespace)
        return
    from copyhunt.targets import Target

    target = Target("module", argv[1], tuple(argv[2:])) if argv[0] == "-m" else Target("script", argv[0], tuple(argv[1:]))
    try:
        target.run()
    except Exception as exc:
        from copyhunt.targets import TargetExit

        if isinstance(exc, TargetExit):
            raise SystemExit(exc.status) from None
        raise


def main(argv: Sequence[str]) -> None:
    """Run ``argv`` under a child hunt (when ``COPYHUNT_FOLLOW`` says so), else plainly."""
    if not argv:
        raise SystemExit("usage: python -m copyhunt._child (script | -m module | -c code) [args...]")
    config = follow.FollowConfig.from_env()
    if config is None or not config.follow:
        _run(argv)
        return
    label = " ".join(argv[:2]) if argv[0] in ("-c", "-m") else argv[0]
    try:
        with follow.ChildHunt(config, target=label if argv[0] != "-c" else "-c <code>"):
            _run(argv)
    except Exception as exc:
        # As Python shows it: the program's frames, not this runner's (the trace is saved by now).
        from copyhunt.cli.tracing import print_user_traceback

        print_user_traceback(exc, sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
