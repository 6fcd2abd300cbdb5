"""Re-run a program under a dispatch mode that numbers ops exactly as the hunt does, fingerprints every
op's outputs, and lets hooks change chosen ops (the elisions ``copyhunt verify`` tests).

Numbering: the mode classifies ops with the hunt's own ``classify`` (composite ops run their C++ kernel
with the mode on and take no number; profiler bookkeeping takes none), and sets the same
``only_lift_cpu_tensors`` flag, so op #N of a re-run is op #N of the trace. The runner checks that
on every run by comparing op names.

Tensors are never kept past the run except by the hooks that need them (a destination seen before
the producer that will write it); fingerprints are hashes of bytes, taken right after each op.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from copyhunt.analysis.op_facts import ALLOC_ONLY_OPS
from copyhunt.text import op_name
from copyhunt.capture.dispatch import _CIA, _COMPOSITE, _SKIP, _lift_cpu_only, classify

#: Where a tensor sits in an op call: ("a", i, j) positional arg i (item j of a list, else -1),
#: ("k", name, j) keyword arg, ("o", j, -1) output j.
Where = tuple[str, Any, int]


class Elision(BaseException):
    """A hook could not do what the plan says (never caught by the program's ``except Exception``)."""


class Infeasible(BaseException):
    """The suggested change cannot be written, or gives other values (the producer's out= raised)."""


class OffTrack(BaseException):
    """The re-run reached a hooked op number running another op: the program took another path."""

    def __init__(self, seq: int, expected: str, got: str) -> None:
        super().__init__(f"op #{seq} is {got}, where the traced run had {expected}")
        self.seq, self.expected, self.got = seq, expected, got


@dataclass(frozen=True)
class Meta:
    """A view's place in its storage: byte offset, shape, strides (elements), dtype."""

    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, t: torch.Tensor) -> "Meta":
        return cls(t.storage_offset() * t.element_size(), tuple(t.shape), tuple(t.stride()), t.dtype)

    def on(self, storage_of: torch.Tensor) -> torch.Tensor:
        """This view, made over the storage of ``storage_of``."""
        st = storage_of.untyped_storage()
        es = torch.empty((), dtype=self.dtype).element_size()
        out = torch.empty(0, dtype=self.dtype, device=storage_of.device)
        return out.set_(st, self.offset // es, self.shape, self.stride)


@dataclass(frozen=True)
class Slot:
    """One tensor of one op call as the probe run saw it: where, its storage's first sight, its view."""

    where: Where
    first: tuple[int, Where]  # (seq, where) the storage was first seen at, in this run
    meta: Meta


def slots(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Iterator[tuple[Where, torch.Tensor]]:
    """Every tensor of an op call, in a fixed order: positional args, keyword args, outputs."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield ("a", i, -1), a
        elif isinstance(a, (list, tuple)):
            for j, t in enumerate(a):
                if isinstance(t, torch.Tensor):
                    yield ("a", i, j), t
    for k, a in kwargs.items():
        if isinstance(a, torch.Tensor):
            yield ("k", k, -1), a
        elif isinstance(a, (list, tuple)):
            for j, t in enumerate(a):
                if isinstance(t, torch.Tensor):
                    yield ("k", k, j), t
    outs = out if isinstance(out, (list, tuple)) else (out,)
    for j, t in enumerate(outs):
        if isinstance(t, torch.Tensor):
            yield ("o", j, -1), t


_VIEW = b"view"
_VIEW_LIKE = frozenset({"aten._unsafe_view.default", "aten._reshape_alias.default", "aten.lift_fresh.default"})


def _is_view(func: Any) -> bool:
    """Views, and allocations whose contents are undefined (``torch.empty``): no value to compare."""
    return bool(getattr(func, "is_view", False)) or str(func) in _VIEW_LIKE or op_name(str(func)) in ALLOC_ONLY_OPS


def fingerprint(obj: Any) -> bytes:
    """A 16-byte hash of every tensor's dtype, shape and bytes (and of other values' repr) in ``obj``."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj, 0)
    return h.digest()


def _feed(h: Any, obj: Any, depth: int) -> None:
    if depth > 20:
        h.update(b"<deep>")
    elif isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(tensor_bytes(obj))
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for x in obj:
            _feed(h, x, depth + 1)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            h.update(repr(k).encode())
            _feed(h, v, depth + 1)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        h.update(repr(obj).encode())
    else:
        # Another object (a cache, a config): its tensors are what the program computed.
        state = getattr(obj, "__dict__", None)
        h.update(type(obj).__qualname__.encode())
        if isinstance(state, dict):
            _feed(h, state, depth + 1)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The bytes of a tensor's elements in row-major order (b"?" for layouts without plain storage)."""
    if t.layout != torch.strided or t.device.type == "meta":
        return b"?"
    try:
        flat = t.detach().reshape(-1).contiguous()
        if flat.dtype != torch.uint8:
            flat = flat.view(torch.uint8)
        return flat.cpu().numpy().tobytes()
    except (RuntimeError, TypeError):
        return b"?"


Hook = Callable[["Replay", int, tuple[Any, ...], dict[str, Any], Any], Any]


@dataclass
class Hooks:
    """What a re-run does at one op: before it, instead of it, after it; ``expect`` is its traced name."""

    expect: str
    pre: list[Hook] = field(default_factory=list)
    replace: Hook | None = None
    post: list[Hook] = field(default_factory=list)


@dataclass
class Replay:
    """One re-run's state and record: op names, fingerprints, and what the probe saw (``observe``)."""

    hooks: dict[int, Hooks] = field(default_factory=dict)
    observe: frozenset[int] = frozenset()  # seqs whose tensors the probe describes (Slot lists)
    track: bool = False  # probe run: follow every storage's first sight
    seq: int = 0
    names: list[str] = field(default_factory=list)
    prints: list[bytes] = field(default_factory=list)  # fingerprint of each op's outputs
    seen: dict[int, list[Slot]] = field(default_factory=dict)
    held: dict[Any, Any] = field(default_factory=dict)  # hooks' state (set-aside values, held tensors)
    _first: dict[int, tuple[Any, tuple[int, Where]]] = field(default_factory=dict)  # storage cdata -> (weak, key)

    def op(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seq = self.seq
        self.seq += 1
        name = str(func)
        self.names.append(name)
        hooks = self.hooks.get(seq)
        if hooks is not None:
            if name != hooks.expect:
                raise OffTrack(seq, hooks.expect, name)
            for h in hooks.pre:
                h(self, seq, args, kwargs, None)
            out = hooks.replace(self, seq, args, kwargs, func) if hooks.replace is not None else func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        # A view computes nothing: its "value" is whatever its base holds now (a workspace about to be
        # overwritten, say), and torch.empty's is undefined. Fingerprints are of computed values.
        self.prints.append(_VIEW if _is_view(func) else fingerprint(out))
        if self.track:
            self._follow(seq, args, kwargs, out)
        if hooks is not None:
            for h in hooks.post:
                h(self, seq, args, kwargs, out)
        return out

    def _follow(self, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Record each storage's first sight, and the slots of the observed ops."""
        described = seq in self.observe
        listed: list[Slot] = []
        for where, t in slots(args, kwargs, out):
            try:
                st = t.untyped_storage()
            except (RuntimeError, NotImplementedError):
                continue
            cd = st._cdata
            known = self._first.get(cd)
            if known is None or known[0]() is None:
                known = self._first[cd] = (_weak(t), (seq, where))
            if described:
                listed.append(Slot(where, known[1], Meta.of(t)))
        if described:
            self.seen[seq] = listed


def _weak(t: torch.Tensor) -> Callable[[], Any]:
    """A weak reference to a tensor's storage: None once it is freed (its address may be reused)."""
    ref = torch.multiprocessing.reductions.StorageWeakRef(t.untyped_storage())
    return lambda: None if ref.expired() else ref


class ReplayMode(TorchDispatchMode):
    """The dispatch mode of a re-run: numbers ops as the hunt does and hands them to ``Replay.op``."""

    def __init__(self, replay: Replay) -> None:
        super().__init__()
        self.replay = replay
        self._kinds: dict[Any, Any] = {}
        self._prev_lift: bool | None = None

    def __enter__(self) -> "ReplayMode":
        self._prev_lift = _lift_cpu_only(True)  # as the hunt does: torch.tensor(device=) copies seen alike
        return super().__enter__()  # type: ignore[return-value]

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            _lift_cpu_only(self._prev_lift)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        kind = self._kinds.get(func)
        if kind is None:
            kind = self._kinds[func] = classify(func) or "op"
        if kind is _COMPOSITE:
            with self:  # the same C++ composite kernel the hunt runs, its ops numbered
                return func._op_dk(_CIA, *args, **kwargs)
        if kind is _SKIP:
            return func(*args, **kwargs)
        return self.replay.op(func, args, kwargs)
