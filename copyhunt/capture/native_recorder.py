"""The compiled recorder (``native_recorder.cpp``): built on first use, cached, optional.

The Python recorder (``capture/recording.py``) is the reference and always works. The compiled one
records the same rows for ops whose tensors are all plain dense tensors and declines the rest (the
Python recorder takes them); with it a full hunt costs about 1.15x a bare dispatch mode on
benchmarks/overhead.py's loop, against about 2.1x with the Python recorder. Both write the same Python
objects, so a hunt may mix them op by op. The module also runs the mode's common path (``dispatch``) and
builds the records after the hunt (``build_ops``, ``build_storages``).

Building: the C++ file includes only c10 headers (shipped with every torch wheel) and Python's, so
the first build takes a few seconds (3-9 s seen) with the system C++ compiler. The module is cached under
``$COPYHUNT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/copyhunt``, else ``~/.cache/copyhunt``), keyed by
the source, the torch and Python builds. Without a compiler, or when the build fails, copyhunt runs
the Python recorder and says why (:func:`unavailable_reason`). ``COPYHUNT_NATIVE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import torch

MODULE_NAME = "copyhunt_native_recorder"
SOURCE = Path(__file__).with_suffix(".cpp")

_lock = threading.Lock()
_loaded: ModuleType | None = None
_reason: str | None = None  # why the compiled recorder is not available (None: not tried, or loaded)
_tried = False


def enabled_by_env() -> bool:
    """False when ``COPYHUNT_NATIVE`` is set to 0/false/no/off."""
    return os.environ.get("COPYHUNT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def supported() -> str | None:
    """None when this interpreter can run the compiled recorder, else why not."""
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    if sys.version_info < (3, 11):
        return "it needs Python 3.11 or newer (frame positions)"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "it needs the GIL (free-threaded Python)"
    if os.name != "posix":
        return "it is built only on Linux and macOS"
    return None


def cache_dir() -> Path:
    """Where built modules are kept."""
    env = os.environ.get("COPYHUNT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "copyhunt"


def _private_temp_dir() -> Path:
    """A cache in the temp folder, for a home that cannot be written: this user's own, mode 0700.

    A module is loaded from here, so a folder someone else made or can write is refused.
    """
    d = Path(tempfile.gettempdir()) / f"copyhunt-cache-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(d)
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise RuntimeError(f"{d} is not a private folder of this user")
    return d


def _torch_dirs() -> tuple[Path, Path]:
    root = Path(torch.__file__).resolve().parent
    return root / "include", root / "lib"


def build_key() -> str:
    """A hash of everything the built module depends on: source, torch build, Python build, machine."""
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    lib = _torch_dirs()[1]
    c10 = next(iter(sorted(lib.glob("libc10.*"))), None)  # a torch rebuilt in place keeps its version
    c10_stamp = f"{c10.stat().st_size}:{c10.stat().st_mtime_ns}" if c10 is not None else ""
    for part in (
        c10_stamp,
        torch.__version__,
        str(_torch_dirs()[0]),
        str(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", "")),
        sys.version,
        sysconfig.get_config_var("EXT_SUFFIX") or "",
        platform.machine(),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


def _compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand.split()[0]):
            return cand
    return None


def _build(target: Path) -> None:
    """Compile SOURCE into ``target`` (atomically: a temp file renamed into place)."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ or clang++)")
    include, lib = _torch_dirs()
    if not (include / "c10" / "core" / "TensorImpl.h").is_file():
        raise RuntimeError(f"torch's C++ headers are not installed ({include})")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    common = [
        *cxx.split(), "-O2", "-shared", "-fPIC", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{include}", f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", tmp,
        f"-L{lib}", "-lc10", f"-Wl,-rpath,{lib}",
    ]  # fmt: skip
    if sys.platform == "darwin":
        common += ["-undefined", "dynamic_lookup"]
    err = ""
    try:
        for std in ("-std=c++20", "-std=c++17"):  # torch 2.13 headers want C++20; older compilers have 17
            proc = subprocess.run([*common, std], capture_output=True, text=True, timeout=600)
            if proc.returncode == 0:
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
                return
            err = (proc.stderr or proc.stdout).strip().splitlines()
            err = err[-1] if err else f"exit {proc.returncode}"
        raise RuntimeError(f"the C++ build failed: {err}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _import(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(MODULE_NAME, str(path))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, str(path), loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def load() -> ModuleType | None:
    """The compiled recorder module (building it once if needed), or None (:func:`unavailable_reason` says why)."""
    global _loaded, _reason, _tried
    if not enabled_by_env():
        return None
    if _tried:
        return _loaded
    with _lock:
        if _tried:
            return _loaded
        _reason = supported()
        if _reason is None:
            name = Path(f"native-{build_key()}") / (MODULE_NAME + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
            target = cache_dir() / name
            try:
                if not target.is_file():
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                    except OSError:
                        if os.environ.get("COPYHUNT_CACHE_DIR"):
                            raise
                        target = _private_temp_dir() / name  # a read-only home: this user's temp cache
                    if not target.is_file():
                        _build(target)
                mod = _import(target)
                # Where tensor objects keep their TensorImpl, checked on tensors of several kinds.
                probes = (torch.empty(2), torch.nn.Parameter(torch.empty(1)), torch.empty(0, dtype=torch.int8)[:0])
                mod.calibrate(probes)
                _loaded = mod
            except Exception as exc:  # noqa: BLE001 - any failure means: use the Python recorder
                _reason = f"{type(exc).__name__}: {exc}".strip()
        _tried = True
        return _loaded


def unavailable_reason() -> str | None:
    """Why the compiled recorder is not in use (after :func:`load`), or None when it is."""
    if not enabled_by_env():
        return "COPYHUNT_NATIVE=0"
    return None if _loaded is not None else _reason
