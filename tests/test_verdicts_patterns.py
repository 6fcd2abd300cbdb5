"""Verdicts on the copy patterns of real transformers code (issue 11's root causes), traced with copyhunt.hunt().

Each workload is the pattern as transformers 5.24 writes it (``rotate_half``, the rotary ``cat((freqs, freqs))``,
T5's relative-position buckets, the grouped_mm experts' ``sort`` then ``.float()``, ``repeat_kv``, the first
``DynamicLayer.update``), on float32 tensors of the sizes given in each test. Every verdict that says a copy
could go must be writable: a suggestion removes the whole copy, and destination passing is suggested only
where the producer really can write the destination's dtype and layout. ``tests/test_verdicts_transformers.py``
checks the same patterns inside the installed transformers models.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

import copyhunt
from copyhunt.analysis import judge
from copyhunt.records import Copy
from copyhunt.view import TraceView, view

HERE = Path(__file__)
_SOURCE = HERE.read_text().splitlines()


def line(mark: str) -> int:
    """The line of this file that carries ``# mark: <mark>``."""
    hits = [i + 1 for i, text in enumerate(_SOURCE) if re.search(rf"# mark: {re.escape(mark)}$", text)]
    assert len(hits) == 1, f"marker {mark!r} found {len(hits)} times"
    return hits[0]


def at(mark: str) -> str:
    """How reasons name a line of this file."""
    return f"{HERE.name}:{line(mark)}"


def hunt(fn, *args) -> tuple[TraceView, object]:
    """Trace ``fn(*args)`` under inference_mode (as generate() runs), judge it; keep fn's result alive."""
    with torch.inference_mode(), copyhunt.hunt() as h:
        result = fn(*args)
    return view(judge(h.trace)), result


def only(judged: TraceView) -> Copy:
    (c,) = judged.copies
    return c


def producer_buffer(judged: TraceView, op: str) -> int:
    """The storage the (single) op named ``op`` allocated."""
    (o,) = [o for o in judged.trace.ops if o.op == op]
    (sid,) = o.allocs
    return sid


# --- 1. multi-source cat: every source is judged ---------------------------------------------------------


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)  # mark: rotate-half


def rotate_half_swapped(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((x1, -x2), dim=-1)  # mark: swapped


def doubled_freqs(pos, inv_freq):
    freqs = pos[..., None] * inv_freq  # mark: freqs
    emb = torch.cat((freqs, freqs), dim=-1)  # mark: emb
    return emb.cos()


def two_fresh(a, b):
    return torch.cat((a * 2, b + 1))  # mark: two-fresh


def test_rotate_half_keeps_the_copy_of_the_half_that_is_not_a_temporary():
    # x: 2 x 4 float32 (32 B); -x2 is a fresh 16 B temporary, x1 is half of x (the caller's tensor).
    x = torch.arange(8.0).view(2, 4)
    trace, out = hunt(rotate_half, x)
    c = only(trace)
    neg = producer_buffer(trace, "aten.neg.default")
    assert (c.verdict, c.op, c.bytes, c.site.line) == ("needed", "aten.cat.default", 32, line("rotate-half"))
    assert c.reason == (
        f"only part of it could be avoided: source 1 of 2 (a fresh 16 B buffer made by aten.neg at "
        f"{at('rotate-half')}) could be written in place, but source 2 (the buffer made before the hunt, first used by "
        f"aten.neg at {at('rotate-half')}: "
        "not a temporary made for this copy) must still be copied"
    )
    assert c.suggestion == "keep it: whatever writes the first slices, the rest is still a copy"
    assert out.tolist() == [[-2.0, -3.0, 0.0, 1.0], [-6.0, -7.0, 4.0, 5.0]]


def test_rotate_half_with_its_sources_swapped_gets_the_same_verdict():
    x = torch.arange(8.0).view(2, 4)
    trace, _ = hunt(rotate_half_swapped, x)
    c = only(trace)
    assert (c.verdict, c.site.line) == ("needed", line("swapped"))
    assert c.reason.startswith("only part of it could be avoided: source 2 of 2 (a fresh 16 B buffer made by aten.neg at ")


def test_cat_of_one_value_twice_is_not_eliminable():
    # freqs: 3 positions x 2 frequencies float32 (24 B); emb holds it twice (48 B).
    trace, _ = hunt(doubled_freqs, torch.arange(3.0), torch.tensor([1.0, 0.5]))
    c = only(trace)
    freqs = producer_buffer(trace, "aten.mul.Tensor")
    assert (c.verdict, c.bytes, c.site.line) == ("needed", 48, line("emb"))
    assert c.reason == (
        f"2 of its sources are the same 24 B of the buffer made by aten.mul.Tensor at {at('freqs')}: "
        "a producer can write only one slice, the others must still be copied"
    )
    assert c.suggestion == "keep it: whatever writes the first slices, the rest is still a copy"


def test_cat_of_fresh_temporaries_only_is_a_fresh_temporary_naming_every_producer():
    a, b = torch.arange(4.0), torch.arange(2.0)
    trace, out = hunt(two_fresh, a, b)
    c = only(trace)
    mul, add = producer_buffer(trace, "aten.mul.Tensor"), producer_buffer(trace, "aten.add.Tensor")
    assert (c.verdict, c.bytes) == ("fresh-temporary", 24)
    assert c.reason == (
        f"each of its 2 sources was made for it alone, is read only by it, then dies: a buffer made by "
        f"aten.mul.Tensor at {at('two-fresh')}, a buffer made by aten.add.Tensor at {at('two-fresh')}"
    )
    assert c.suggestion == (
        f"allocate the result first and let each producer write its slice (out=result[...]): aten.mul.Tensor at "
        f"{at('two-fresh')}, aten.add.Tensor at {at('two-fresh')}; then drop this copy"
    )
    assert out.tolist() == [0.0, 2.0, 4.0, 6.0, 1.0, 2.0]


# --- 2. destination passing only where the producer can write that dtype ----------------------------------


def scaled_to_long(x):
    return (x * 2.5).to(torch.long)  # mark: mul-long


def sorted_to_float(ids):
    ids_g, perm = torch.sort(ids)  # mark: sort
    return ids_g.float(), perm  # mark: sort-float


def mask_to_long(x):
    return (x > 0).to(torch.long)  # mark: gt-long


def test_float_expression_cast_to_long_is_needed_mul_cannot_write_int64():
    # torch.mul(x, 2.5, out=<int64>) raises "result type Float can't be cast to the desired output type Long".
    trace, out = hunt(scaled_to_long, torch.arange(4.0))
    c = only(trace)
    mul = producer_buffer(trace, "aten.mul.Tensor")
    assert (c.verdict, c.dtype, c.site.line) == ("needed", "torch.int64", line("mul-long"))
    assert c.reason == (
        f"source (a fresh 16 B buffer made by aten.mul.Tensor at {at('mul-long')}) is read only by this copy, "
        "but aten.mul.Tensor cannot write int64 itself: out= does not cast float32 to int64"
    )
    assert c.suggestion == "keep it: this copy is how the value becomes int64"
    assert out.tolist() == [0, 2, 5, 7]


def test_sort_cannot_write_float_from_integer_input():
    # torch.sort(ids, out=(<float32>, <int64>)) raises: sort's values keep the input's dtype.
    trace, _ = hunt(sorted_to_float, torch.tensor([3, 1, 2]))
    c = only(trace)
    assert (c.verdict, c.dtype, c.site.line) == ("needed", "torch.float32", line("sort-float"))
    assert c.reason.endswith("but aten.sort cannot write float32 itself: its out= must be int64, its result dtype")


def test_comparison_cast_to_long_is_writable():
    # torch.gt(x, 0, out=<int64>) works: comparisons write any dtype.
    trace, _ = hunt(mask_to_long, torch.tensor([-1.0, 2.0]))
    c = only(trace)
    assert (c.verdict, c.site.line) == ("fresh-temporary", line("gt-long"))
    assert c.suggestion.endswith(" (producing int64 directly)")


# --- 3. suggestions that cannot be written: reshape copies ------------------------------------------------


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)  # mark: repeat-kv


def attend(q, k):
    return torch.matmul(q, repeat_kv(k, 2).transpose(2, 3))


def test_repeat_kv_reshape_is_not_told_to_use_a_view():
    # k: 1 x 2 kv heads x 3 x 4 float32 (96 B), repeated to 4 heads: 192 B. No view merges (2, 2) heads
    # whose second dim has stride 0, so reshape copies, and no alias can replace the copy.
    q, k = torch.ones(1, 4, 3, 4), torch.arange(24.0).view(1, 2, 3, 4)
    trace, _ = hunt(attend, q, k)
    c = only(trace)
    assert (c.op, c.bytes, c.verdict, c.site.line) == ("aten.clone.default", 192, "needed", line("repeat-kv"))
    assert c.reason == "made by reshape: PyTorch copies only when no view of the source has the new shape, so no alias can replace it"
    assert c.suggestion == "keep it, or change the consumer to take the source's shape (e.g. broadcast over the repeated dim)"


# --- 4. cat with empty sources is a copy of the one non-empty source --------------------------------------


def first_cache_update(key_states):
    keys = torch.cat([torch.tensor([]), key_states], dim=-2)  # mark: first-update
    return keys.sum()


def first_cache_update_fresh(x):
    key_states = x * 2  # mark: fresh-keys
    keys = torch.cat([torch.tensor([]), key_states], dim=-2)  # mark: first-update-fresh
    return keys.sum()


def test_cat_with_an_empty_first_source_is_an_alias_in_disguise():
    k = torch.ones(1, 2, 3, 4)
    trace, _ = hunt(first_cache_update, k)
    c = only(trace)
    assert (c.verdict, c.bytes, c.site.line) == ("defensive-clone", 96, line("first-update"))
    (src,) = [s for s in c.src_storages if s != c.src_storage]
    assert c.reason == (
        f"its other sources are empty, so it copies the buffer made before the hunt, first used by aten.cat at "
        f"{at('first-update')} unchanged; neither the source nor this copy "
        "is written until it dies: an alias would do"
    )
    assert c.suggestion == "use the non-empty source itself instead of concatenating it with empty tensors"


def test_cat_with_an_empty_source_of_a_fresh_value_is_a_fresh_temporary():
    trace, _ = hunt(first_cache_update_fresh, torch.ones(1, 2, 3, 4))
    c = only(trace)
    mul = producer_buffer(trace, "aten.mul.Tensor")
    assert [f.verdict for f in c.findings] == ["fresh-temporary", "defensive-clone"]
    assert c.reason.startswith(f"source (a fresh 96 B buffer made by aten.mul.Tensor at {at('fresh-keys')}) is read only by this copy")
    assert c.suggestion == f"drop this copy and use the result of aten.mul.Tensor at {at('fresh-keys')} itself: it was made for this copy alone"


# --- a copy of a multi-source cat is not "chained": no single original to copy from ---------------------


def cache_then_cast(old, new):
    keys = torch.cat([old, new], dim=-2)  # mark: cache-cat
    return keys.to(torch.float64)  # mark: cache-cast


def test_copy_of_a_cat_of_two_buffers_is_not_chained_to_the_first_one():
    # Before issue 11 this cast was "chained: copy from buffer #<old> straight into the destination in one
    # op", which drops the new keys. One op does exist: the cat writing float64 itself (a wider dtype).
    trace, out = hunt(cache_then_cast, torch.ones(1, 2, 3, 4), torch.zeros(1, 2, 1, 4))
    cat, cast = trace.copies
    assert (cat.op, cast.op, cast.site.line) == ("aten.cat.default", "aten._to_copy.default", line("cache-cast"))
    assert [f.verdict for f in cast.findings] == ["fresh-temporary"]
    assert cast.suggestion == (
        f"let aten.cat at {at('cache-cat')} write straight into this copy's destination (destination passing: "
        "out=/output= or an in-place variant), then drop this copy (producing float64 directly); "
        "that producer is itself a copy, so one op would do"
    )
    assert out.shape == (1, 2, 4, 4) and out.dtype == torch.float64
