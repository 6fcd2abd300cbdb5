"""``python -m copyhunt``: same as the ``copyhunt`` command."""

from copyhunt.cli import main

raise SystemExit(main())
