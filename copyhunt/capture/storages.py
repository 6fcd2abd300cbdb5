"""Storage identity and byte-range accesses, without keeping any storage alive.

Storages get small integer ids local to one capture. The key is the StorageImpl address
(``untyped_storage()._cdata``), checked against a weak reference on every lookup: the caching
allocator reuses addresses, so a storage freed and replaced at the same address gets a NEW id
(``data_ptr`` alone would collide).

Everything kept per storage is a plain int or str (raw weak-reference handles, not StorageWeakRef
objects): a hunt over many ops then adds no objects for Python's cyclic GC to scan, which would
otherwise cost more than the recording itself.
"""

from __future__ import annotations

import threading
import weakref

import torch

_expired = torch.UntypedStorage._expired  # type: ignore[attr-defined]
_free_weak_ref = torch.UntypedStorage._free_weak_ref  # type: ignore[attr-defined]


def span(t: torch.Tensor) -> tuple[int, bool]:
    """(bytes between the first and last element touched, whether every byte of it is touched)."""
    es = t.element_size()
    if t.is_contiguous():
        return t.numel() * es, True
    if t.numel() == 0:
        return 0, True
    sizes = t.shape
    strides = t.stride()
    last = 0
    for s, st in zip(sizes, strides):
        last += (s - 1) * st
    # Dense = non-overlapping and gap-free: sorted by stride, each stride equals the product
    # of the sizes before it (transposed or channels-last tensors qualify).
    dims = sorted((st, s) for s, st in zip(sizes, strides) if s != 1)
    expect = 1
    dense = True
    for st, s in dims:
        if st != expect:
            dense = False
            break
        expect *= s
    return (last + 1) * es, dense


def access(t: torch.Tensor, sid: int, dense_ok: bool = True) -> tuple[int, int, int, bool]:
    """``(storage, offset, nbytes, dense)`` of ``t``; ``dense_ok=False`` for ops that touch only part of it."""
    es = t.element_size()
    if t.is_contiguous():
        return (sid, t.storage_offset() * es, t.numel() * es, dense_ok)
    nbytes, dense = span(t)
    return (sid, t.storage_offset() * es, nbytes, dense and dense_ok)


def _free_all(handles: list[int]) -> None:
    for i, h in enumerate(handles):
        if h:
            _free_weak_ref(h)
            handles[i] = 0


class StorageTable:
    """Maps live storages to small ids; remembers each storage's device, size and liveness."""

    def __init__(self) -> None:
        self.by_cdata: dict[int, int] = {}  # StorageImpl address -> id of the storage seen there last
        # Per id, lists indexed by id (8 bytes an entry where a dict takes ~50: one entry per storage
        # of a long hunt). An id is the list length, taken and filled under the lock, so threads never
        # misalign the three lists.
        self.weak: list[int] = []  # raw weak reference handle (0 once released)
        self.device: list[str] = []
        self.nbytes: list[int] = []  # storage size when first seen
        self.lock = threading.Lock()
        # Set (for good) once a second thread records: lookups then re-check under the lock.
        self.threaded = False
        self._device_names: dict[torch.device, str] = {}
        # Release the weak references even if the capture is dropped without close().
        self._finalizer = weakref.finalize(self, _free_all, self.weak)

    def __len__(self) -> int:
        return len(self.weak)

    def expired(self, sid: int) -> bool:
        """Whether storage ``sid`` has been freed."""
        return _expired(self.weak[sid])  # type: ignore[no-any-return]

    def lookup(self, t: torch.Tensor) -> tuple[int, bool, int | None]:
        """(id, is_new, id of a dead storage this one replaced at the same address or None)."""
        st = t.untyped_storage()
        cd = st._cdata
        sid = self.by_cdata.get(cd)
        if sid is not None and not _expired(self.weak[sid]):
            return sid, False, None
        return self.new(st, cd, t, sid)

    def new(self, st: torch.UntypedStorage, cd: int, t: torch.Tensor, old: int | None) -> tuple[int, bool, int | None]:
        """Register a storage not seen alive before (``old``: the dead id last seen at its address)."""
        if t.is_cpu:
            name = "cpu"  # the common case, without building a torch.device
        else:
            dev = t.device
            name = self._device_names.get(dev)
            if name is None:
                name = self._device_names[dev] = str(dev)
        with self.lock:
            if self.threaded:
                # Re-check under the lock: another thread may have registered it meanwhile.
                cur = self.by_cdata.get(cd)
                if cur is not None and cur != old and not _expired(self.weak[cur]):
                    return cur, False, None
            sid = len(self.weak)
            self.weak.append(st._weak_ref())
            self.device.append(name)
            self.nbytes.append(st.nbytes())
            self.by_cdata[cd] = sid
        return sid, True, old

    def close(self) -> dict[int, bool]:
        """Liveness of every storage now (by id), then release all weak references."""
        alive = {sid: bool(h) and not _expired(h) for sid, h in enumerate(self.weak)}
        with self.lock:
            _free_all(self.weak)
            self.by_cdata.clear()
        return alive
