"""The typer application every subcommand module registers on, and how its help and usage read.

Help is click's plain formatter (it wraps at the terminal's width and never cuts a word); arguments
show the metavar their command gives them, never typer's type labels (``<str>``, ``<list[str]>``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import typer
from typer.core import TyperCommand

try:  # typer >= 0.24 vendors click as typer._click; older typer depends on click itself.
    from typer._click import _textwrap as click_textwrap
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import _textwrap as click_textwrap
    from click import exceptions as click_exceptions


class _NoHyphenBreaks(click_textwrap.TextWrapper):  # type: ignore[misc,name-defined]
    """click's wrapper, never breaking a line inside ``comma-separated`` or ``copyhunt-TARGET``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["break_on_hyphens"] = False
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def _whole_words() -> Iterator[None]:
    """While help is formatted, click wraps with ``_NoHyphenBreaks`` (it looks the wrapper up per call)."""
    original = click_textwrap.TextWrapper
    click_textwrap.TextWrapper = _NoHyphenBreaks
    try:
        yield
    finally:
        click_textwrap.TextWrapper = original


class CopyhuntCommand(TyperCommand):
    """A typer command whose arguments read as their metavar in help and usage.

    An argument whose metavar is written in brackets (``[TRACE] [-- ARGS...]``) appears in the usage
    line exactly as written; others as typer would (``[TARGET]``). The Arguments section lists
    only arguments with help text, by metavar, without a type label.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with _whole_words():
            super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = param.metavar or param.name.upper()
            if not name.startswith("["):
                name = (name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else "")
            pieces.append(name)
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                if getattr(param, "help", None) and not param.hidden:
                    args.append((param.metavar or param.name.upper(), param.help))
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


app = typer.Typer(
    name="copyhunt",
    help="Find, judge and gate the tensor copies nobody meant to write.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def command(name: str, **kwargs: Any) -> Any:
    """``@app.command(name)`` with copyhunt's help and usage (``CopyhuntCommand``)."""
    return app.command(name, cls=CopyhuntCommand, **kwargs)


def _show_version(value: bool) -> None:
    if value:
        from copyhunt import __version__

        print(f"copyhunt {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", is_eager=True, callback=_show_version, help="Print copyhunt's version and exit."
    ),
) -> None:
    """Find, judge and gate the tensor copies nobody meant to write."""
