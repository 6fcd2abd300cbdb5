"""Size and speed of the HTML report for 10,000 copies (CPU; headless Chromium for the page's timings).

    python benchmarks/html_report.py [--rounds 4]

Renders the 10k-copy sample trace of the tests (400 entries after folding), reports the Python
render time and page size, then loads the page in headless Chromium with ``#selftest``, interleaving
the page as shipped with a copy whose big-tree ``content-visibility`` rules are switched off, and
reports the page's first-render time and the "Expand all" time (layout included) of each.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import copyhunt.report.html as page_module  # noqa: E402
from html_samples import ten_thousand_copies  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--window-size=1280,900", "--dump-dom"]


def selftest(chromium: str, page: Path) -> dict:
    """The page's #selftest findings after one headless load (a fresh profile each time)."""
    profile = tempfile.mkdtemp()
    try:
        out = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", page.as_uri() + "#selftest"],
                             capture_output=True, text=True, timeout=120).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return json.loads(html.unescape(re.search(r'<pre id="selftest"[^>]*>(.*?)</pre>', out, re.S).group(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    trace = ten_thousand_copies()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        text = page_module.render_html(trace)
        times.append(time.perf_counter() - start)
    result: dict = {"copies": len(trace.copies), "page_bytes": len(text.encode()),
                    "render_html_s": {"best": round(min(times), 3), "median": round(statistics.median(times), 3)}}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is not None:
        work = Path(tempfile.mkdtemp())
        shipped = work / "shipped.html"
        shipped.write_text(text)
        original = page_module._asset
        page_module._asset = lambda n: original(n).replace("#tree.big ", "#tree.off ") if n == "report.css" else original(n)
        unlayered = work / "no-content-visibility.html"
        unlayered.write_text(page_module.render_html(trace))
        page_module._asset = original
        runs: dict[str, list] = {"shipped": [], "no-content-visibility": []}
        for _ in range(args.rounds):  # interleaved: A, B, A, B...
            for name, page in (("shipped", shipped), ("no-content-visibility", unlayered)):
                st = selftest(chromium, page)
                runs[name].append({"ok": st["ok"], "render_ms": round(st["render_ms"]), "expand_all_ms": st["ms"]["expand_all"]})
        shutil.rmtree(work, ignore_errors=True)
        result["chromium"] = runs
    print(json.dumps(result, indent=1))
    for name, rows in result.get("chromium", {}).items():
        print(f"{name}: render {[r['render_ms'] for r in rows]} ms, expand all {[r['expand_all_ms'] for r in rows]} ms")
    print(f"render_html {result['render_html_s']} s, page {result['page_bytes']:,} bytes for {result['copies']:,} copies")


if __name__ == "__main__":
    main()
