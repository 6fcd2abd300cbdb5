"""Probe for issue 17: what a compiled helper saves on the per-tensor facts of the capture's hot path.

    PYTHONPATH=. python benchmarks/cext_probe.py

Builds (``torch.utils.cpp_extension.load_inline``, cached afterwards) a one-function extension that
returns a tensor's (StorageImpl address, byte offset, bytes, contiguous) in one call, prints the
build time, checks it agrees with the Python spelling, and times both per tensor. Not used by
copyhunt: a measurement for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import time
import timeit
from typing import Any

import torch
from torch.utils.cpp_extension import load_inline

SRC = r"""
#include <torch/extension.h>
#include <torch/csrc/autograd/python_variable.h>
static PyObject* facts(PyObject* self, PyObject* arg) {
  if (!THPVariable_Check(arg)) { Py_RETURN_NONE; }
  const at::Tensor& t = THPVariable_Unpack(arg);
  auto* impl = t.unsafeGetTensorImpl();
  if (!impl->has_storage() || !t.is_contiguous()) { Py_RETURN_NONE; }
  auto* st = impl->storage().unsafeGetStorageImpl();
  int64_t es = t.element_size();
  return Py_BuildValue("(KLLO)", (unsigned long long)(uintptr_t)st, (long long)(t.storage_offset() * es),
                       (long long)(t.numel() * es), Py_True);
}
static PyMethodDef methods[] = {{"facts", facts, METH_O, ""}, {nullptr, nullptr, 0, nullptr}};
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { PyModule_AddFunctions(m.ptr(), methods); }
"""


def python_facts(t: torch.Tensor) -> Any:
    """The hot path's Python spelling of the same facts (contiguous case)."""
    st = t.untyped_storage()
    cd = st._cdata
    if t.is_contiguous():
        off = t.storage_offset()
        return (cd, off * t.element_size() if off else 0, t.nbytes, True)
    return None


def main() -> int:
    """Build, check, time."""
    t0 = time.perf_counter()
    ext = load_inline("copyhunt_cext_probe", cpp_sources=[SRC], extra_cflags=["-O2"])
    print(f"build or load: {time.perf_counter() - t0:.1f} s")
    x = torch.randn(16, 16)[2:]
    assert ext.facts(x) == python_facts(x), (ext.facts(x), python_facts(x))
    n = 300_000
    empty = timeit.timeit(lambda: None, number=n)
    py = (timeit.timeit(lambda: python_facts(x), number=n) - empty) / n * 1e9
    c = (timeit.timeit(lambda: ext.facts(x), number=n) - empty) / n * 1e9
    print(f"per tensor: Python {py:.0f} ns, compiled {c:.0f} ns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
