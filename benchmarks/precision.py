"""Verdict precision on real programs (issue 11): how many copies judged eliminable does re-execution prove?

For every program of ``tests/precision_corpus.py`` (tiny random transformers models built from configs, and
the bundled MoE demo): trace it (after a warm-up), judge it, then ``copyhunt verify`` every site with
eliminable copies, comparing every op's outputs (``kind="script"``, stricter than a function's return
value). Counts are copies (a site's status is each of its copies' status).

    python benchmarks/precision.py                     # every program; writes benchmarks/precision.json
    python benchmarks/precision.py --programs moe_demo_baseline,bert_encoder --out /tmp/p.json

Verdicts made by another copyhunt (the rules before issue 11, say) are verified the same way: save its
traces with that copyhunt first (``--save-traces`` needs only ``copyhunt.hunt`` and ``judge``), then
verify them with this one:

    PYTHONPATH=/path/to/old/checkout python benchmarks/precision.py --save-traces /tmp/old
    python benchmarks/precision.py --traces /tmp/old --out /tmp/old.json

Prints a Markdown table last. Targets: 0 refuted among the copies the table shows as eliminable, at least
90% of eliminable copies verified, and the bundled MoE baseline's 2 copies per layer eliminable and verified.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the corpus lives with the tests that share it

import torch  # noqa: E402

from copyhunt.records import is_eliminable  # noqa: E402
from precision_corpus import PROGRAMS  # noqa: E402

STATUSES = ("verified", "refuted", "not-testable")


def save_trace(name: str, folder: Path) -> None:
    """Warm up, trace and judge with whatever copyhunt is imported (as copyhunt verify would), and save."""
    import contextlib
    import io
    import random

    from copyhunt.analysis import judge

    try:  # the API module's name before and after the redesign
        from copyhunt.hunting import hunt
    except ImportError:
        from copyhunt.hunt import hunt  # type: ignore[no-redef]
    try:
        from copyhunt.tracefile import save
    except ImportError:
        from copyhunt.records import save  # type: ignore[no-redef,attr-defined]

    program = PROGRAMS[name]()

    def seeded() -> Any:
        torch.manual_seed(0)
        random.seed(0)
        with contextlib.redirect_stdout(io.StringIO()):
            return program()

    seeded()
    with hunt() as h:
        keep = seeded()
    del keep
    save(judge(h.trace), folder / f"{name}.json", overwrite=True)


def measure(name: str, traces: Path | None = None) -> dict[str, Any]:
    from copyhunt.tracefile import load
    from copyhunt.verify import verify, warm_and_trace

    t0 = time.perf_counter()
    program = PROGRAMS[name]()
    if traces is None:
        trace = warm_and_trace(program)
    else:
        program()  # the warm-up verify's own tracing would do
        trace = load(traces / f"{name}.json")
    t1 = time.perf_counter()
    result = verify(program, trace, kind="script")
    t2 = time.perf_counter()
    copies = result.trace.read_copies()
    elim = [c for c in copies if is_eliminable(c.verdict)]
    by_status = Counter(c.verification.status if c.verification else "not run" for c in elim)
    sites = [
        {
            "site": s.plan.key,
            "copies": len(s.plan.copies),
            "verdicts": dict(Counter(c.verdict for c in s.plan.copies)),
            "status": s.verification.status,
            "detail": s.verification.detail,
            "seconds": round(s.seconds, 3),
        }
        for s in result.sites
    ]
    return {
        "program": name,
        "copies": len(copies),
        "eliminable": len(elim),
        "by_verdict": dict(Counter(c.verdict for c in elim)),
        **{s: by_status.get(s, 0) for s in STATUSES},
        "sites": sites,
        "deterministic": result.deterministic,
        "trace_s": round(t1 - t0, 2),
        "verify_s": round(t2 - t1, 2),
    }


def moe_check(row: dict[str, Any]) -> str:
    """The bundled MoE baseline: 4 layers x 2 copies, every one eliminable and verified."""
    ok = row["copies"] == 8 and row["eliminable"] == 8 and row["verified"] == 8
    return f"MoE baseline: {row['verified']} of {row['copies']} copies eliminable and verified ({'ok' if ok else 'MISSED'})"


def table(rows: list[dict[str, Any]]) -> str:
    head = "| program | copies | judged eliminable | verified | refuted | not testable | sites (verified/all) |\n"
    head += "|---|---:|---:|---:|---:|---:|---:|\n"
    lines = []
    for r in rows:
        vs = sum(1 for s in r["sites"] if s["status"] == "verified")
        lines.append(f"| {r['program']} | {r['copies']} | {r['eliminable']} | {r['verified']} | {r['refuted']} | "
                     f"{r['not-testable']} | {vs}/{len(r['sites'])} |")
    tot = {k: sum(r[k] for r in rows) for k in ("copies", "eliminable", "verified", "refuted", "not-testable")}
    vs = sum(1 for r in rows for s in r["sites"] if s["status"] == "verified")
    ns = sum(len(r["sites"]) for r in rows)
    lines.append(f"| **all** | {tot['copies']} | {tot['eliminable']} | {tot['verified']} | {tot['refuted']} | "
                 f"{tot['not-testable']} | {vs}/{ns} |")
    share = 100.0 * tot["verified"] / tot["eliminable"] if tot["eliminable"] else 100.0
    tail = f"\nverified: {tot['verified']} of {tot['eliminable']} eliminable copies ({share:.1f}%); refuted: {tot['refuted']}"
    return head + "\n".join(lines) + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", default=",".join(PROGRAMS), help="comma-separated names (default: all)")
    ap.add_argument("--out", default=str(HERE / "precision.json"))
    ap.add_argument("--save-traces", metavar="DIR", help="only trace and judge each program, save DIR/<program>.json")
    ap.add_argument("--traces", metavar="DIR", help="verify the judged traces in DIR instead of tracing afresh")
    args = ap.parse_args(argv)
    names = [n for n in args.programs.split(",") if n]
    bad = [n for n in names if n not in PROGRAMS]
    if bad:
        print(f"unknown program(s): {', '.join(bad)}; known: {', '.join(PROGRAMS)}", file=sys.stderr)
        return 2
    if args.save_traces:
        folder = Path(args.save_traces)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            save_trace(name, folder)
            print(f"{name}: saved {folder / (name + '.json')}", file=sys.stderr)
        return 0
    rows = []
    for name in names:
        row = measure(name, Path(args.traces) if args.traces else None)
        rows.append(row)
        print(f"{name}: {row['eliminable']} eliminable, {row['verified']} verified, {row['refuted']} refuted, "
              f"{row['not-testable']} not testable (trace {row['trace_s']} s, verify {row['verify_s']} s)", file=sys.stderr)
    import transformers

    doc = {
        "what": "copies judged eliminable, proved by copyhunt verify (every op's outputs compared)",
        "verdicts_from": args.traces or "this copyhunt",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
        "programs": rows,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(table(rows))
    moe = [r for r in rows if r["program"] == "moe_demo_baseline"]
    if moe:
        print(moe_check(moe[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
