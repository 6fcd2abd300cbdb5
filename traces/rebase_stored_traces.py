"""One-off: rewrite the machine paths in the stored GPU fixtures (they cannot be re-captured without a GPU).

    python traces/rebase_stored_traces.py        (from the repository root; idempotent)

The H200 fixtures (``traces/moe-h200/*.json``, ``traces/kineto-h200/index.json``) were captured in a
checkout at ``/work/main`` and recorded absolute paths. Every ``file`` of a frame object
(``{"file", "line", "function"}``: sites, stacks, op sites) and the index's ``source_file`` are rewritten
the way ``copyhunt trace`` now records them (``copyhunt.text.display_path`` from the checkout's root:
repository files relative to it, installed packages by import path). Only those strings change: the
files keep their schema version (``moe-baseline.json`` is a version-1 fixture on purpose) and every
other byte of meaning. New captures need none of this: ``traces/capture_moe_traces.py`` goes through
the runner's path rule.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from copyhunt.text import display_path

REPO = Path(__file__).resolve().parent.parent
CAPTURED_AT = "/work/main"  # the checkout the fixtures were captured in
FILES = [*sorted((REPO / "traces" / "moe-h200").glob("*.json")), REPO / "traces" / "kineto-h200" / "index.json"]


def _rebase(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rebase(v) for k, v in node.items()}
        if {"file", "line", "function"} <= out.keys() and isinstance(out["file"], str):
            out["file"] = display_path(out["file"], CAPTURED_AT)
        if isinstance(out.get("source_file"), str):
            out["source_file"] = display_path(out["source_file"], CAPTURED_AT)
        return out
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node


def main() -> None:
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        doc = _rebase(json.loads(text))
        indent = 1 if text.startswith("{\n") else None  # keep each file's layout
        path.write_text(json.dumps(doc, indent=indent) + ("\n" if text.endswith("\n") else ""), encoding="utf-8")
        print(f"rewrote {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
