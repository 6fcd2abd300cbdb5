"""Renderers: tables, JSON, GitHub annotations and timelines; they take a console or a path and run nothing."""

from __future__ import annotations

from enum import Enum


class Format(str, Enum):
    """How a gate or diff result is printed (``--format``)."""

    text = "text"
    json = "json"
    github = "github"


#: Every output format, as text.
FORMATS = tuple(f.value for f in Format)
