"""The typer application every subcommand module registers on."""

from __future__ import annotations

import typer

try:  # typer >= 0.24 vendors click as typer._click; older typer depends on click itself.
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

app = typer.Typer(
    name="copyhunt",
    help="Find, judge and gate the tensor copies nobody meant to write.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
