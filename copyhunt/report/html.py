"""``copyhunt report TRACE --html OUT.html``: one self-contained page, no server, no network.

`render_html(trace)` is pure: it returns the page's text. Traces come from strangers, so no text
from a trace is ever put into markup: the page carries ONE JSON data block (`html_data.report_data`,
with ``<``, ``>`` and ``&`` written as ``\\u003c``... so ``</script>`` cannot end it) and its inline
script builds the DOM with ``textContent``. A Content-Security-Policy lets only the page's own
script and style run (by hash) and images come only from ``data:`` URIs, so nothing is fetched.
The page draws a call tree, a flame graph and a per-site table; its script, style and skeleton live
in ``html_assets/``. `write_html` writes a page (never over a file without ``force``), and
`read_bench` reads the `copyhunt bench moe` files a user names for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from copyhunt.errors import CopyhuntError, OutputExistsError
from copyhunt.records import Trace
from copyhunt.view import TraceView
from copyhunt.report.html_data import BenchAttachment, report_data
from copyhunt.text import human_bytes

#: Largest bench file (JSON or PNG) accepted by `read_bench`.
MAX_BENCH_FILE = 16 * 1024 * 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BENCH_SCHEMA_PREFIX = "copyhunt.bench."


class OutputWriteError(CopyhuntError):
    """The output file cannot be written (missing permission, a folder in the way...)."""


class BenchFileError(CopyhuntError):
    """A --bench file is missing, not a regular file, too large, or neither bench JSON nor PNG."""


# --- the page ----------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("copyhunt.report").joinpath("html_assets", name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: ASCII only, no ``<``, ``>`` or ``&``."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def render_html(
    trace: Trace | TraceView,
    *,
    trace_path: str | None = None,
    showing: Sequence[str] = (),
    bench: BenchAttachment | None = None,
    cwd: str | None = None,
) -> str:
    """The whole page for ``trace`` (and a bench result, if given) as one string.

    ``showing`` names the display filters already applied to ``trace`` (``kind=d2d``...).
    """
    css, js = _asset("report.css"), _asset("report.js")
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_sha256(js)}",
            f"style-src {_sha256(css)}",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    page = _asset("report.html").replace("@CSP@", csp).replace("@CSS@", css).replace("@JS@", js)
    # Data goes in last so that nothing in it is ever taken for a placeholder.
    return page.replace("@DATA@", embed_json(report_data(trace, trace_path=trace_path, showing=showing, bench=bench, cwd=cwd)))


# --- files ---------------------------------------------------------------------------------------


def read_bench(paths: Sequence[str | os.PathLike[str]]) -> BenchAttachment:
    """Read `copyhunt bench moe` output named by the user: its JSON (``--json``) and/or PNG (``--plot``)."""
    doc: Mapping[str, Any] | None = None
    png: bytes | None = None
    for raw in paths:
        path = Path(raw)
        data = _read_regular(path)
        if data.startswith(PNG_SIGNATURE):
            if png is not None:
                raise BenchFileError(f"--bench {path}: a second PNG; give one plot")
            png = data
            continue
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BenchFileError(f"--bench {path}: neither a PNG nor JSON (expected `copyhunt bench moe --json` or --plot output)") from None
        schema = parsed.get("schema") if isinstance(parsed, dict) else None
        if not isinstance(schema, str) or not schema.startswith(BENCH_SCHEMA_PREFIX):
            raise BenchFileError(f"--bench {path}: not a copyhunt bench result (no '{BENCH_SCHEMA_PREFIX}*' schema)")
        if doc is not None:
            raise BenchFileError(f"--bench {path}: a second bench JSON; give one")
        doc = parsed
    return BenchAttachment(doc=doc, png=png)


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file no larger than MAX_BENCH_FILE (never blocks on a FIFO or device)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise BenchFileError(f"--bench {path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BenchFileError(f"--bench {path}: not a regular file")
    if st.st_size > MAX_BENCH_FILE:
        raise BenchFileError(f"--bench {path}: {human_bytes(st.st_size)} is larger than the {human_bytes(MAX_BENCH_FILE)} accepted")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BenchFileError(f"--bench {path}: cannot read ({exc.strerror or exc})") from None


def check_output(path: str | os.PathLike[str], force: bool, option: str = "--html") -> None:
    """Fail early (before any work) when ``path`` exists and ``force`` is off."""
    if os.path.lexists(path) and not force:
        raise OutputExistsError(f"{option} {path}: file exists; pass --force to overwrite it")


def write_html(text: str, path: str | os.PathLike[str], *, force: bool = False, option: str = "--html") -> Path:
    """Write ``text`` to ``path`` with the user's umask; never replace a file unless ``force``.

    Without ``force`` the name is created exclusively, so a file that appeared since the check is
    not clobbered either; with it, a temporary file in the same folder replaces the old one whole.
    """
    path = Path(path)
    check_output(path, force, option)
    data = text.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"{option} {path}: cannot create its folder ({exc.strerror or exc})") from None
    try:
        if not force:
            _write_new(path, data)
        else:
            tmp = _write_temp(path, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    except FileExistsError:  # created by someone else since the check
        raise OutputExistsError(f"{option} {path}: file exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise OutputWriteError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
    return path


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` in a new hidden file beside ``path`` (created with the same umask rule); its name."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            _write_new(tmp, data)
        except FileExistsError:
            continue
        return tmp
    raise OutputWriteError(f"cannot create a temporary file beside {path}")


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist; mode 0666 less the umask) and write ``data``; no half file left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
