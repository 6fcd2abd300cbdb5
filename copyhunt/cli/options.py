"""Options shared by the commands, declared once (typer reads each default as the option's definition).

Choices are Enums defined where their concept lives (``GroupBy`` in analysis.grouping, ``Format`` in
report), so the CLI validates them the way the library names them.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from copyhunt.analysis.grouping import GroupBy, SortBy
from copyhunt.report import Format
from copyhunt.report.table import DEFAULT_TOP
from copyhunt.selection import Selection

__all__ = ["GroupBy", "SortBy", "Format", "BenchMode", "selection", "parse_size"]


class BenchMode(str, Enum):
    """What ``copyhunt bench moe`` times (``--mode``)."""

    graph = "graph"
    eager = "eager"
    both = "both"


# --- what is shown ---------------------------------------------------------------------------------
TOP = typer.Option(DEFAULT_TOP, "--top", min=0, metavar="N", help="Show the N largest rows (0: all).")
BY = typer.Option(GroupBy.site, "--by", metavar="site|module|region", help="One row per source site, nn.Module path or region.")
JSON = typer.Option(False, "--json", help="Print the trace document (JSON) on stdout and nothing else.")
SORT = typer.Option(SortBy.bytes, "--sort", metavar="bytes|count|time|site", help="Order rows by bytes, copies, device time, or file and line.")
MIN_BYTES = typer.Option(None, "--min-bytes", metavar="SIZE", help="Hide rows that wrote fewer bytes than SIZE (e.g. 4096, 64K, 1MiB).")
FORMAT = typer.Option(Format.text, "--format", "-f", metavar="text|json|github", help="text, json (the same as --json) or github (::error / ::warning annotations on the lines).")
JSON_FORMAT = typer.Option(False, "--json", help="Print the result as JSON on stdout (the same as --format json).")

# --- which copies (one selection: copyhunt.selection) ---------------------------------------------------
KIND = typer.Option(None, "--kind", metavar="KINDS", help="Only these copy kinds, comma-separated: d2d,h2d,d2h,p2p.")
REGION = typer.Option(None, "--region", metavar="GLOB", help="Only copies inside a region matching GLOB, at any nesting level.")
SITE = typer.Option(None, "--site", metavar="GLOB", help="Only copies whose source file (as shown) or file:line matches GLOB.")
OP = typer.Option(None, "--op", metavar="GLOB", help="Only copies whose op matches GLOB (aten.copy_* or copy_).")

# --- runs of several processes (docs/multiprocess.md) ------------------------------------------------
RANK = typer.Option(None, "--rank", metavar="R", help="A run folder: only the trace of torch.distributed rank R.")

# --- attribution and output files ----------------------------------------------------------------
FOCUS = typer.Option(None, "--focus", metavar="GLOB", help="Attribute copies to the first frame matching GLOB (repeatable).")
HIDE = typer.Option(None, "--hide", metavar="GLOB", help="Never attribute copies to frames matching GLOB (repeatable).")
OUTPUT = typer.Option(None, "--output", "-o", metavar="FILE", help="Save the trace here (default: a new copyhunt-TARGET.PID.json in the current directory).")
FORCE = typer.Option(False, "--force", help="Overwrite an existing output file.")

# --- how much is captured ---------------------------------------------------------------------------
NO_VERDICTS = typer.Option(
    False, "--no-verdicts",
    help="Copies only: record no per-op history and judge nothing (the cheap capture; budgets on copies and bytes still apply).",
)
MAX_OPS = typer.Option(
    None, "--max-ops", min=1, metavar="N",
    help="Ring mode for endless runs: keep only the newest N op records (every copy is kept; copies older than that history get no verdict).",
)

Globs = Optional[List[str]]
OptionalPath = Optional[Path]


def selection(kind: str | None, region: str | None, site: str | None = None, op: str | None = None) -> Selection:
    """The selection options as one Selection; a bad value fails with one line naming the option."""
    return Selection.parse(kinds=kind, region=region, site=site, op=op,
                           names={"kinds": "--kind", "region": "--region", "site": "--site", "op": "--op"})


def json_format(fmt: Format) -> Format:
    """``--json`` is ``--format json``; with another --format it is a usage error."""
    if fmt not in (Format.text, Format.json):
        raise typer.BadParameter(f"--json and --format {fmt.value} disagree; give one", param_hint="--json")
    return Format.json


_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}


def parse_size(raw: str | None, flag: str = "--min-bytes") -> int:
    """``"64K"`` -> 65536 (binary units, as the tables print them); a usage error names a bad value."""
    if raw is None:
        return 0
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", raw)
    unit = m.group(2).upper() if m else None
    if m is None or unit not in _UNITS:
        raise typer.BadParameter(f"{raw!r} is not a size (e.g. 4096, 64K, 1MiB)", param_hint=flag)
    return int(float(m.group(1)) * _UNITS[unit])
