"""Turn a site's intents (``plan.py``) into the hooks of one re-run (``replay.py``).

Every hook works on views of the program's own storages and keeps tensors only as long as its
intent needs them (never the op's own output object: see ``values.keep``).
"""

from __future__ import annotations

from typing import Any

import torch

from copyhunt.analysis.op_facts import CONCAT_OPS
from copyhunt.text import op_name
from copyhunt.capture.copy_ops import COPY_OPS
from copyhunt.verify.plan import Intent, SitePlan
from copyhunt.verify.replay import Elision, Hooks, Infeasible, Meta, Replay, Slot, Where, tensor_bytes
from copyhunt.verify.values import at, copy_places, invert, keep, out_variant, snapshot, substitute

_COPY_OPS = frozenset(str(op) for op in COPY_OPS)  # "aten.copy_.default"...
#: Producers that draw random numbers: running one again (to test its out=) would change what follows.
_RANDOM = frozenset({
    "bernoulli", "bernoulli_", "dropout", "native_dropout", "rand", "randn", "randint", "rand_like", "randn_like",
    "randint_like", "normal", "normal_", "uniform_", "multinomial", "randperm", "exponential_", "geometric_",
    "cauchy_", "log_normal_", "random_",
})


class Untestable(Exception):
    """The site's intents cannot be turned into hooks (the message says why)."""


# --- hooks ------------------------------------------------------------------------------------------


class _Hooks:
    """The hooks of one re-run under construction; every hooked op expects its traced name."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.by_seq: dict[int, Hooks] = {}

    def at(self, seq: int) -> Hooks:
        if seq >= len(self.names):
            raise Untestable(f"op #{seq} is not in the traced run")
        h = self.by_seq.get(seq)
        if h is None:
            h = self.by_seq[seq] = Hooks(self.names[seq])
        return h


def hooks_for(plan: SitePlan, seen: dict[int, list[Slot]], names: list[str]) -> dict[int, Hooks]:
    """The hooks of one site's re-run; ``seen`` is what the probe run saw at the plan's ops and
    ``names`` the traced op names by seq."""
    hooks = _Hooks(names)
    by_copy: dict[int, list[Intent]] = {}
    for i in plan.intents:
        by_copy.setdefault(i.copy, []).append(i)
    for seq, intents in by_copy.items():
        if len({i.how for i in intents}) != 1:
            raise Untestable(f"copy #{seq} has several elisions at once")
        first = intents[0]
        h = hooks.at(seq)
        if h.replace is not None:
            raise Untestable(f"copy #{seq} is elided twice")
        if first.how in ("skip", "back-skip"):
            h.replace = _skip
        elif first.how == "invert":
            h.post.append(_invert_written)
        elif first.how == "alias":
            h.replace = _alias(first.source)
        elif first.how == "back":
            _back(hooks, first)
        elif first.how == "chain":
            _chain(hooks, first)
        elif first.how == "redirect":
            _redirect(hooks, intents, seen)
        else:
            raise Untestable(f"unknown elision {first.how!r}")
    return hooks.by_seq


def _skip(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], func: Any) -> Any:
    """The copy is not made: an in-place copy returns its destination untouched."""
    _, dst, in_place = copy_places(str(func), args, kwargs)
    if not in_place:
        raise Elision("only an in-place copy can be skipped outright")
    return at(dst, args, kwargs, None)


def _invert_written(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
    """After the copy: its destination's elements inverted (nobody may read them before they die)."""
    _, dst, _ = copy_places(r.names[seq], args, kwargs)
    invert(at(dst, args, kwargs, out))


def _alias(position: int) -> Any:
    def replace(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], func: Any) -> Any:
        srcs, _, in_place = copy_places(str(func), args, kwargs)
        if in_place:
            raise Elision("an in-place copy has no result to alias")
        out = func(*args, **kwargs)  # for its shape and dtype only; dropped at once
        src = at(srcs[position - 1], args, kwargs, None)
        if src.dtype != out.dtype or src.device != out.device or src.numel() != out.numel():
            raise Infeasible("the source has another dtype, device or size than the copy: no view of it is the copy")
        try:
            return src.view(out.shape)  # a view: the program now shares the source's storage
        except RuntimeError:
            raise Infeasible(f"no view of the source {tuple(src.shape)} (strides {tuple(src.stride())}) has the copy's shape {tuple(out.shape)}") from None

    return replace


def _back(hooks: _Hooks, i: Intent) -> None:
    """Round trip into a new buffer: return the original (as the first copy read it) instead."""
    assert i.other is not None
    key = ("back", i.copy)

    def hold(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        srcs, _, _ = copy_places(r.names[seq], args, kwargs)
        r.held[key] = keep(at(srcs[0], args, kwargs, out))

    def replace(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], func: Any) -> Any:
        original = r.held.pop(key, None)
        if original is None:
            raise Elision("the original was not seen before the copy back")
        out = func(*args, **kwargs)
        if original.dtype != out.dtype or original.numel() != out.numel():
            raise Elision("the original has another dtype or size than the copy back")
        return original.view(out.shape)

    hooks.at(i.other).post.append(hold)
    hooks.at(i.copy).replace = replace


def _chain(hooks: _Hooks, i: Intent) -> None:
    """The intermediate is never made: inverted after the first copy; the second copy reads the
    original (as the first copy read it) through the same view it took of the intermediate."""
    assert i.other is not None
    key = ("chain", i.copy)

    def after_first(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        srcs, dst, _ = copy_places(r.names[seq], args, kwargs)
        original, made = at(srcs[0], args, kwargs, out), at(dst, args, kwargs, out)
        if tuple(original.shape) != tuple(made.shape) or not made.is_contiguous():
            raise Elision("the first copy broadcasts or writes a strided intermediate: no element-for-element original")
        with torch.inference_mode():
            # The original's elements in the intermediate's (row-major) order, in a buffer of their own.
            value = original.clone(memory_format=torch.contiguous_format)
        r.held[key] = (value, Meta.of(made))
        invert(made)

    def replace(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], func: Any) -> Any:
        got = r.held.pop(key, None)
        if got is None:
            raise Elision("the first copy of the chain did not run before the second")
        value, made = got
        srcs, _, _ = copy_places(str(func), args, kwargs)
        read = Meta.of(at(srcs[i.source - 1], args, kwargs, None))
        size = made.dtype.itemsize
        first = (read.offset - made.offset) // size
        last = first + sum((n - 1) * st for n, st in zip(read.shape, read.stride)) if all(read.shape) else first
        if read.dtype != made.dtype or (read.offset - made.offset) % size or first < 0 or last >= value.numel():
            raise Elision("the second copy reads beyond what the first copy wrote")
        with torch.inference_mode():
            view = torch.empty(0, dtype=value.dtype, device=value.device)
            view.set_(value.untyped_storage(), first, read.shape, read.stride)
        a, k = substitute(args, kwargs, {srcs[i.source - 1]: view})
        return func(*a, **k)

    hooks.at(i.other).post.append(after_first)
    hooks.at(i.copy).replace = replace


def _redirect(hooks: _Hooks, intents: list[Intent], seen: dict[int, list[Slot]]) -> None:
    """Destination passing: each producer's value is set aside right after it runs and its own buffer
    inverted; the destination gets the value as soon as it exists (the copy is then skipped), or the
    copy, when it makes its destination, runs from the set-aside values."""
    c = intents[0]
    at_copy = seen.get(c.copy)
    if at_copy is None:
        raise Untestable(f"the probe run did not reach copy #{c.copy}")
    src_places, dst_place, in_place = _places_seen(c.copy_op, at_copy)
    by_where = {s.where: s for s in at_copy}
    dst = by_where.get(dst_place)
    if dst is None:
        raise Untestable("the probe run saw no destination tensor")
    early = in_place and dst.first[0] < c.copy  # the destination exists before the copy
    if early and len(intents) > 1:
        raise Untestable("a cat into an existing buffer: where each source's slice lies is not recorded")
    stash_keys: list[tuple[Where, Any]] = []
    for i in intents:
        assert i.other is not None
        if i.source - 1 >= len(src_places):
            raise Untestable(f"copy #{c.copy} has no source {i.source}")
        src = by_where.get(src_places[i.source - 1])
        produced = seen.get(i.other)
        if src is None or produced is None:
            raise Untestable("the probe run did not see the source and its producer")
        holder = next((s.where for s in produced if s.first == src.first), None)
        if holder is None:
            raise Untestable(f"the producer #{i.other} does not touch the source's buffer")
        key = ("stash", c.copy, i.source)
        stash_keys.append((src_places[i.source - 1], key))
        if src.meta.dtype != dst.meta.dtype and hooks.names[i.other] not in _COPY_OPS:
            # "Producing int64 directly": can the producer really write that dtype, with the same values?
            hooks.at(i.other).post.append(_probe_out(holder, dst.meta.dtype))
        hooks.at(i.other).post.append(_set_aside(key, holder, src.meta))
    if early:
        _write_destination(hooks, intents[0], dst, stash_keys[0][1])
    done = ("written", c.copy)

    def replace(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], func: Any) -> Any:
        if r.held.pop(done, False):
            return at(dst_place, args, kwargs, None)  # the producer wrote the destination: skip the copy
        new = {}
        for where, key in stash_keys:
            value = r.held.pop(key, None)
            if value is None:
                raise Elision("the producer did not run before the copy")
            new[where] = value
        a, k = substitute(args, kwargs, new)
        return func(*a, **k)

    hooks.at(c.copy).replace = replace


def _places_seen(op: str, listed: list[Slot]) -> tuple[list[Where], Where, bool]:
    """copy_places, from the places the probe saw (it has no args to look at)."""
    name = op_name(op)
    wheres = [s.where for s in listed]
    if name == "copy_":
        src: Where = ("a", 1, -1) if ("a", 1, -1) in wheres else ("k", "src", -1)
        return [src], ("a", 0, -1), True
    if name in CONCAT_OPS:
        srcs = sorted((w for w in wheres if w[0] in ("a", "k") and w[1] in (0, "tensors") and w[2] >= 0), key=lambda w: w[2])
        if ("k", "out", -1) in wheres:
            return srcs, ("k", "out", -1), True
        return srcs, ("o", 0, -1), False
    return [("a", 0, -1)], ("o", 0, -1), False


def _probe_out(holder: Where, dtype: torch.dtype) -> Any:
    def post(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        name = r.names[seq]
        if op_name(name) in _RANDOM:
            raise Elision(f"{name} draws random numbers: running it again to test writing {dtype} would change what follows")
        variant = out_variant(name)
        if variant is None:
            raise Elision(f"{name} has no out= overload to test writing {dtype} with")
        made = at(holder, args, kwargs, out)
        buf = torch.empty(tuple(made.shape), dtype=dtype, device=made.device)
        shown = name[: -len(".default")] if name.endswith(".default") else name
        try:
            with torch.inference_mode():
                variant(*args, **{**kwargs, "out": buf})
        except (RuntimeError, TypeError) as exc:
            text = str(exc).strip().splitlines()
            raise Infeasible(f"{shown}(..., out=<{dtype}>) raises: {text[0] if text else type(exc).__name__}") from None
        with torch.inference_mode():
            cast = made.to(dtype)
        if tensor_bytes(buf) != tensor_bytes(cast):
            raise Infeasible(f"{shown} writing {dtype} itself gives other values than casting its {made.dtype} result")

    return post


def _set_aside(key: Any, holder: Where, meta: Meta) -> Any:
    def post(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        view = meta.on(at(holder, args, kwargs, out))
        r.held[key] = snapshot(view)
        invert(view)  # the producer's own buffer never gets the value now

    return post


def _write_destination(hooks: _Hooks, i: Intent, dst: Slot, key: Any) -> None:
    """Write the set-aside value into the existing destination at the first moment both exist."""
    assert i.other is not None
    seq_d, where_d = dst.first
    held_key, done = ("dst", i.copy), ("written", i.copy)

    def remember(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        r.held[held_key] = keep(at(where_d, args, kwargs, out))

    def write(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        value = r.held.pop(key, None)
        target = r.held.pop(held_key, None)
        if target is None and seq == seq_d:
            target = at(where_d, args, kwargs, out)
        if value is None or target is None:
            raise Elision("the value or the destination is missing when it should be written")
        with torch.inference_mode():
            dst.meta.on(target).copy_(value)
        r.held[done] = True

    if seq_d <= i.other:
        if seq_d < i.other:
            hooks.at(seq_d).post.append(remember)  # hold the destination from its first sight
        if i.begin is not None and seq_d <= i.begin:
            # Several ops build the value: nobody may read the destination from where it begins.
            hooks.at(i.begin).post.append(_invert_held(held_key, dst.meta, where_d if seq_d == i.begin else None))
        hooks.at(i.other).post.append(write)  # after _set_aside, appended first
    elif where_d[0] == "o":
        hooks.at(seq_d).post.append(write)  # made between the producer and the copy: written once made
    else:
        hooks.at(seq_d).pre.append(write)  # first used between them: written before that use


def _invert_held(held_key: Any, meta: Meta, where: Where | None) -> Any:
    def post(r: Replay, seq: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        target = r.held.get(held_key) if where is None else at(where, args, kwargs, out)
        if target is not None:
            invert(meta.on(target))

    return post
