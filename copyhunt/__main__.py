"""``python -m copyhunt``: same as the ``copyhunt`` command."""

from copyhunt.cli import run

run()
