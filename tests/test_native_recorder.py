"""The compiled recorder (capture/native_recorder.cpp) writes exactly the rows the Python recorder writes.

Every program here runs twice under ``copyhunt.hunt()``, on fresh identical inputs: once as shipped (the
compiled recorder takes the ops it handles) and once with ``COPYHUNT_NATIVE=0`` (the Python recorder,
the reference, takes every op). The traces must be equal field for field: every OpRecord, CopyRecord,
StorageInfo and note. The corpus is code nobody here wrote (tiny random transformers models, the bundled
MoE demo) plus hand-written programs that each hit one branch of the C++ port. Each run also counts
the Python recorder's calls, so an equality is never vacuous: the shipped run really went native.

The cyclic GC is paused during each hunt: the two recorders allocate different Python objects, so
collections (which may free tensors held in cycles) would otherwise come at different ops, moving a
``frees`` entry for a reason that has nothing to do with either recorder.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from configs: nothing may be fetched
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import copyhunt  # noqa: E402
from copyhunt.capture import native_recorder  # noqa: E402
from copyhunt.capture.copy_ops import COPY_OPS, CopyFacts  # noqa: E402
from copyhunt.capture.op_roles import READ, Plan  # noqa: E402
from copyhunt.capture.raw import CaptureResult  # noqa: E402
from copyhunt.capture.recording import Recorder  # noqa: E402
from copyhunt.records import Trace  # noqa: E402

PLAIN = (torch.Tensor, nn.Parameter)


@pytest.fixture(scope="module", autouse=True)
def _native_available() -> None:
    """These tests are about the compiled recorder: it must build here (a failure is a failure, not a skip)."""
    assert native_recorder.load() is not None, native_recorder.unavailable_reason()


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif type(x) in (list, tuple):
        for y in x:
            if isinstance(y, torch.Tensor):
                yield y


def _planned_tensors(plan: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Iterator[torch.Tensor]:
    """The tensors the recorders look at: outputs (unless the plan skips them) and the planned arguments."""
    if not plan.skip_outputs:
        yield from _tensors(out)
    for pos, name, _role in plan.args:
        yield from _tensors(args[pos] if pos < len(args) else kwargs.get(name))



# --- running a program twice and comparing ------------------------------------------------------------


@dataclasses.dataclass
class Run:
    trace: Trace
    out: Any
    python_seqs: list[int]  # seqs the Python recorder took (Recorder.record calls)
    python_copies: int  # Recorder._record_copy calls (the compiled path calls it for copies it declines)
    nonplain: list[int]  # of python_seqs, those with a tensor the compiled path does not handle


def hunted(program: Callable[[], Any], *, native: bool, **hunt_kw: Any) -> Run:
    """``program()`` under ``copyhunt.hunt(**hunt_kw)`` with the compiled recorder on or off (the env switch)."""
    seqs: list[int] = []
    nonplain: list[int] = []
    copies = [0]
    record, record_copy = Recorder.record, Recorder._record_copy

    def counting_record(self: Recorder, seq: int, plan: Any, args: Any, kwargs: Any, out: Any, frame: Any) -> None:
        seqs.append(seq)
        if any(type(t) not in PLAIN or t.layout != torch.strided or t.is_quantized for t in _planned_tensors(plan, args, kwargs, out)):
            nonplain.append(seq)
        record(self, seq, plan, args, kwargs, out, frame)

    def counting_copy(self: Recorder, *a: Any) -> None:
        copies[0] += 1
        record_copy(self, *a)

    with pytest.MonkeyPatch.context() as mp:
        if native:
            mp.delenv("COPYHUNT_NATIVE", raising=False)
        else:
            mp.setenv("COPYHUNT_NATIVE", "0")
        mp.setattr(Recorder, "record", counting_record)
        mp.setattr(Recorder, "_record_copy", counting_copy)
        gc.collect()
        gc.disable()
        try:
            with copyhunt.hunt(**hunt_kw) as h:
                out = program()
        finally:
            gc.enable()
    assert h.trace is not None
    return Run(h.trace, out, seqs, copies[0], nonplain)


def _differing(a: Any, b: Any) -> str:
    fields = [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    return "; ".join(f"{name}: native={getattr(a, name)!r} python={getattr(b, name)!r}" for name in fields)


def assert_same_records(native: Trace, python: Trace) -> None:
    """Every op, copy and storage record equal; on a mismatch name the first record and its differing fields."""
    for what in ("ops", "copies", "storages"):
        a, b = getattr(native, what), getattr(python, what)
        for x, y in zip(a, b):
            assert x == y, f"{what}: first mismatch at seq {getattr(x, 'seq', getattr(x, 'id', '?'))} ({x.op if hasattr(x, 'op') else ''}): {_differing(x, y)}"
        assert len(a) == len(b), f"{what}: {len(a)} native records, {len(b)} Python ones"
    assert native.meta.notes == python.meta.notes


def both(program: Callable[[], Any], **hunt_kw: Any) -> tuple[Run, Run]:
    """The program hunted natively, then with the Python recorder; records asserted equal.

    One hunted run first, discarded: a program's first hunted run may import lazily (an ImportError
    caught inside torch keeps the caller's frame in a cycle, so its tensors are alive at the hunt's end
    while the cyclic GC is paused), which belongs to neither recorder."""
    with copyhunt.hunt():
        program()
    n, p = [hunted(program, native=flag, **hunt_kw) for flag in (True, False)]  # one line: the same stacks
    assert_same_records(n.trace, p.trace)
    if hunt_kw.get("record_ops", True) and "max_ops" not in hunt_kw:
        assert p.python_seqs == [o.seq for o in p.trace.ops]  # the reference run recorded every op in Python
    return n, p


def plain_program(program: Callable[[], Any], **hunt_kw: Any) -> tuple[Run, Run]:
    """``both`` for a program of plain dense tensors only: the compiled recorder took every op."""
    n, p = both(program, **hunt_kw)
    assert n.python_seqs == [] and n.python_copies == 0
    assert p.trace.ops or p.trace.copies  # something was recorded
    return n, p


# --- hand-written programs, one branch of the C++ each --------------------------------------------------


def views_and_layouts() -> Any:
    """Transposed (dense, not contiguous), strided (not dense), expanded (stride 0), channels-last outputs."""
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    a = x.t() + 1  # a dense non-contiguous read
    b = x[:, ::2] * 2  # a gapped read: span covers the gaps, not dense
    c = torch.randn(1, 6).expand(4, 6) + x  # stride 0: overlapping, not dense
    d = x[1:3, 2:5].clone()  # a read at an offset
    e = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)  # a new output written non-contiguous
    f = e.t() if e.dim() == 2 else e.permute(0, 2, 3, 1).contiguous()  # a dense permuted source copied
    g = torch.empty_strided((3, 4), (1, 3)).copy_(x[:3, :4])  # a copy into a column-major destination
    return a.sum() + b.sum() + c.sum() + d.sum() + f.sum() + g.sum()


def zero_numel() -> Any:
    """Zero-element tensors: contiguous, transposed, at an offset, through cat and copies."""
    torch.manual_seed(0)
    z = torch.empty(0, 3)
    a = z + 1
    b = z.t().sum(0)
    x = torch.randn(5, 3)
    c = x[5:] * 2  # zero elements at an offset of 15 elements
    d = torch.cat([x, z, x[2:2]])
    e = z.to(torch.float16)
    f = torch.empty(3, 0).copy_(torch.randn(3, 0))
    return a, b, c, d, e, f


def in_place() -> Any:
    """In-place ops (RW roles) on whole tensors, views, transposed views and partial writes."""
    torch.manual_seed(0)
    x = torch.randn(4, 4)
    y = torch.randn(4, 4)
    x.add_(1)
    x.mul_(y)
    x[1:].zero_()
    x.t().add_(y)
    x[:, 0].fill_(3.0)
    x.masked_fill_(y > 0, 0.5)  # a partial write
    x.clamp_(min=-1, max=1)
    torch.relu_(y)
    return x, y


def out_arguments() -> Any:
    """out= ops: matching outputs, an empty one resized, a transposed one."""
    torch.manual_seed(0)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    c = torch.empty(4, 4)
    torch.add(a, b, out=c)
    d = torch.empty(0)
    torch.mul(a, b, out=d)  # resized inside the op: same StorageImpl, new bytes
    e = torch.empty(4, 4).t()
    torch.mm(a, b, out=e)
    f = torch.empty(4)
    torch.sum(a, dim=0, out=f)
    vals, idx = torch.empty(4), torch.empty(4, dtype=torch.long)
    torch.max(a, dim=1, out=(vals, idx))
    return c, d, e, f, vals, idx


def index_puts() -> Any:
    """index_put_ with accumulate True and False, positional and keyword (the RW upgrade of WRITE)."""
    torch.manual_seed(0)
    x = torch.zeros(6, 3)
    idx = torch.tensor([0, 2, 2, 5])
    v = torch.randn(4, 3)
    x.index_put_((idx,), v, True)
    x.index_put_((idx,), v, False)
    x.index_put_((idx,), v, accumulate=True)
    x.index_put_((idx,), v, accumulate=False)
    torch.ops.aten.index_put_.default(x, [idx], v, accumulate=True)
    torch.ops.aten.index_put_.default(x, [idx], v)
    y = torch.index_put(x, (idx,), v, accumulate=True)
    x[idx] += v
    x[torch.tensor([1, 3])] = 7.0
    return x, y


def cat_and_stack() -> Any:
    """Copies from several sources: layouts per source (dtype, contiguity), promotion, stack."""
    torch.manual_seed(0)
    a, b = torch.randn(3, 4), torch.randn(4, 3)
    c = torch.cat([a, b.t(), a[:, :]])  # the second source is transposed
    d = torch.cat([a, a.half()])  # type promotion: sources of two dtypes
    e = torch.stack([a, b.t(), a])
    f = torch.cat([a])  # one source
    g = torch.cat([a, a], dim=1)
    h = torch.hstack([a, a[:, :1]])
    return c, d, e, f, g, h


def copies_and_casts() -> Any:
    """copy_ onto itself (a no-op), plain copies, .to(dtype) casts, clones, .item() (a copy to a host value)."""
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    x.copy_(x)  # no-op
    y = torch.empty(4, 5)
    y.copy_(x)
    y.t().copy_(torch.randn(5, 4))  # a transposed destination
    z = torch.empty(4, 5, dtype=torch.int32)
    z.copy_(x)  # a cast inside copy_
    h = x.to(torch.float16)
    dd = x.t().double()  # a non-contiguous source cast
    same = x.to(torch.float32)  # same dtype: returns x, no copy
    cl = x.clone()
    ct = x.t().contiguous()
    it = x[0, 0].item()
    n = int(x.sum() > 0)
    return y, z, h, dd, same, cl, ct, it, n


def storage_reuse() -> Any:
    """Storages freed during the hunt: watched copy storages found dead (the watch list, every 8th op,
    16 at a time, its position moving) and reported in some later op's frees."""
    torch.manual_seed(0)
    keep = []
    for i in range(40):
        a = torch.randn(8, 8)
        b = a.clone()  # a copy: a and b are watched
        c = b.t().contiguous()
        if i % 3 == 0:
            keep.append(c)
        del a, b, c
        _ = torch.ones(2) * i  # more ops so the sweep runs
    return keep


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.lin(x))
        return h.t().contiguous().t()  # a copy inside the module


def modules_and_regions() -> Any:
    """Ops inside nn.Modules (module path, Parameters as plain tensors) and copyhunt.region (region path)."""
    torch.manual_seed(0)
    model = nn.Sequential(_Block(), nn.ReLU(), _Block())
    x = torch.randn(3, 8)
    with copyhunt.region("outer"):
        y = model(x)
        with copyhunt.region("inner"):
            z = y.to(torch.float64)
            w = model[0](x)
    return y, z, w


def inference_mode() -> Any:
    """Under inference_mode composite ops reach the hunt undecomposed (their C++ kernel runs, traced)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 4)).eval()
    x = torch.randn(5, 8)
    with torch.inference_mode():
        y = model(x)
        r = x.t().reshape(-1)  # composite reshape of a non-contiguous tensor: a copy
        s = torch.nn.functional.softmax(y, dim=-1).float()
        t = x.flatten().unflatten(0, (8, 5)).contiguous()
    return y, r, s, t


def training_step() -> Any:
    """Backward (ops run by the autograd engine) and foreach optimizers: tensor lists as RW arguments."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    opts = [torch.optim.Adam(model[0].parameters(), lr=0.1, foreach=True), torch.optim.SGD(model[2].parameters(), lr=0.1, momentum=0.9, foreach=True)]
    x, y = torch.randn(6, 8), torch.randn(6, 2)
    for _ in range(2):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=False)
    return [p.detach().clone() for p in model.parameters()]


def other_devices() -> Any:
    """Meta tensors: a device other than the CPU (device names, h2d copy kinds) without a GPU."""
    torch.manual_seed(0)
    x = torch.randn(4, 4)
    m = x.to("meta")  # a copy from the host to another device
    a = m.t() + 1
    b = torch.empty(3, 5, device="meta")
    c = torch.cat([m, m.t()])
    d = torch.empty(4, 4, device="meta").copy_(x)
    e = m.to(torch.float16)
    return a.shape, b.shape, c.shape, d.shape, e.shape


def odd_indexing_and_views() -> Any:
    """Index lists holding None, complex conjugate views resolved, unbind/split outputs, numpy storages,
    sites in a comprehension, a generator and eval'd code."""
    torch.manual_seed(0)
    x = torch.zeros(4, 6)
    idx = torch.tensor([1, 4])
    x[:, idx] = torch.ones(4, 2)  # indices [None, idx]
    torch.ops.aten.index_put_.default(x, [None, idx], torch.full((4, 2), 2.0), accumulate=True)
    z = torch.randn(3, 3, dtype=torch.complex64)
    zc = z.conj().resolve_conj()
    parts = [p * 2 for p in x.unbind(0)] + list(p + 1 for p in x.split(4, dim=1))  # comprehension, generator
    n = torch.from_numpy(x.numpy().copy()) + 1
    e = eval("x.t().contiguous() + n.t()")  # a site in <string>
    return x, zc, parts, n, e


PROGRAMS: dict[str, Callable[[], Any]] = {
    f.__name__: f
    for f in (views_and_layouts, zero_numel, in_place, out_arguments, index_puts, cat_and_stack, copies_and_casts,
              storage_reuse, modules_and_regions, inference_mode, training_step, other_devices,
              odd_indexing_and_views)  # fmt: skip
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_hand_written_programs_record_the_same_rows(name: str) -> None:
    """Each branch of the C++ port against the Python recorder, every op taken by the compiled path."""
    n, p = plain_program(PROGRAMS[name])
    assert p.trace.meta.notes == ()


def test_hand_written_programs_hit_the_branches_they_name() -> None:
    """The corpus is not vacuous: it has no-op copies, multi-source layouts, frees, regions, modules, RW
    accesses from accumulate=True and gapped (non-dense) reads."""
    t = {name: hunted(f, native=True).trace for name, f in PROGRAMS.items()}
    assert any(c.noop for c in t["copies_and_casts"].copies)
    assert any(c.src_dtypes == ("torch.float32", "torch.float16") for c in t["cat_and_stack"].copies)
    assert any(c.src_contiguity == (True, False, True) for c in t["cat_and_stack"].copies)
    assert sum(len(o.frees) for o in t["storage_reuse"].ops) >= 60
    assert {o.region for o in t["modules_and_regions"].ops} >= {"outer", "outer/inner"}
    assert {o.module for o in t["modules_and_regions"].ops} >= {"Sequential.0.lin", "Sequential.2.norm", "_Block.lin"}
    puts = [o for o in t["index_puts"].ops if o.op == "aten.index_put_.default"]
    x_sid = puts[0].writes[0].storage
    rw = [any(a.storage == x_sid for a in o.reads) for o in puts]
    # accumulate=True (positional, keyword, aten keyword) reads x too; overwrites and x[idx] += v do not.
    assert rw == [True, False, True, False, True, False, False, False]
    assert any(not a.dense for o in t["views_and_layouts"].ops for a in o.reads)
    assert any(a.nbytes == 0 for o in t["zero_numel"].ops for a in o.reads + o.writes)
    assert {"aten._foreach_add_.List", "aten._foreach_mul_.Scalar"} <= {o.op for o in t["training_step"].ops}
    assert any(len(o.writes) >= 2 for o in t["training_step"].ops if o.op.startswith("aten._foreach"))
    assert {s.device for s in t["other_devices"].storages} == {"cpu", "meta"}
    assert [c.kind for c in t["other_devices"].copies if c.src_device != c.dst_device] == ["h2d", "h2d"]


def test_ring_mode_records_the_same_newest_rows() -> None:
    """hunt(max_ops=N): the same N newest op rows and every copy."""
    n, p = both(storage_reuse, max_ops=50)
    assert len(n.trace.ops) == 50 and n.python_seqs == []


def test_copies_only_hunt_records_the_same_copies() -> None:
    """record_ops=False: only copy ops reach a recorder; the same copy rows and no op rows."""
    n, p = both(copies_and_casts, record_ops=False)
    assert len(n.trace.copies) >= 8 and [o.seq for o in n.trace.ops if o.is_copy] == [c.seq for c in n.trace.copies]
    assert {o.op for o in n.trace.ops} <= {str(op) for op in COPY_OPS}  # no add, no mul: copy ops only
    assert n.python_seqs == [] and p.python_seqs == [o.seq for o in p.trace.ops]


def test_a_thread_started_during_the_hunt_hands_every_later_op_to_python() -> None:
    """A second recording thread sets the table's ``threaded`` flag for good: from then on the compiled
    recorder declines (the Python recorder's lock-protected table is the only writer). Same rows either
    way; thread ids are compared by order of appearance (a new thread's ident may differ run to run)."""
    def program() -> Any:
        torch.manual_seed(0)
        x = torch.randn(4, 4)
        y = x.clone() + 1  # main thread, before any other thread: native

        def work() -> None:
            z = x.t().contiguous() * 2
            z.sum()

        th = threading.Thread(target=work)
        th.start()
        th.join()  # no interleaving: the same seqs in both runs
        return y.t().contiguous() + x

    def normalized(t: Trace) -> Trace:
        order: dict[int | None, int] = {}
        for r in (*t.ops, *t.copies):
            order.setdefault(r.thread, len(order))
        ops = tuple(dataclasses.replace(o, thread=order[o.thread]) for o in t.ops)
        copies = tuple(dataclasses.replace(c, thread=order[c.thread]) for c in t.copies)
        return dataclasses.replace(t, ops=ops, copies=copies)

    n, p = [hunted(program, native=flag) for flag in (True, False)]  # one line: the same stacks
    assert_same_records(normalized(n.trace), normalized(p.trace))
    main = threading.get_ident()
    worker_n = next(o.thread for o in n.trace.ops if o.thread != main)
    worker_seqs = [o.seq for o in n.trace.ops if o.thread == worker_n]
    assert worker_seqs and all(o.thread in (main, worker_n) for o in n.trace.ops)
    # The Python recorder took a tail: every worker op and every later one; the compiled one, the head.
    first = min(n.python_seqs)
    assert n.python_seqs == [o.seq for o in n.trace.ops if o.seq >= first]
    assert first <= min(worker_seqs) and first > 0
    assert n.trace.ops[-1].thread == main and n.trace.ops[-1].seq in n.python_seqs


# --- code nobody here wrote ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hunt_kw",
    [{}, {"focus": ["*/copyhunt_moe/layer.py"], "hide": ["*/copyhunt_moe/torch_experts.py"], "stack_depth": 3}],
    ids=["default_sites", "focus_hide_depth3"],
)
def test_bundled_moe_demo_records_the_same_rows(hunt_kw: dict[str, Any]) -> None:
    """The MoE demo (copyhunt_moe) on the CPU, with the default site rule and with focus/hide globs (the
    site walk past hidden and candidate frames to a focused one) and a short stack. Its stack of layers is
    cached per config, so one untraced step first makes both hunted steps start from the same state."""
    from copyhunt_moe import demo

    demo.baseline(device="cpu")
    n, p = plain_program(lambda: demo.baseline(device="cpu"), **hunt_kw)
    assert torch.equal(n.out, p.out)
    assert len(n.trace.copies) == 8  # two output copies per layer, 4 layers (tests/test_moe_demo.py)
    if hunt_kw:
        assert {c.site.file.rsplit("/", 1)[-1] for c in n.trace.copies if c.site} == {"layer.py"}
        assert all(len(c.stack) <= 3 for c in n.trace.copies)


LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip


def _llama_generate() -> Callable[[], Any]:
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    ids = torch.randint(3, 256, (1, 6))
    return lambda: model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)


def _qwen3_moe_forward() -> Callable[[], Any]:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Qwen3MoeConfig(**LLAMA, moe_intermediate_size=64, head_dim=16, num_experts=8, num_experts_per_tok=2)
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    x = torch.randint(3, 256, (2, 7))

    def run() -> Any:
        model.config._experts_implementation = "eager"
        return model(x).logits

    return run


@pytest.mark.parametrize("build", [_llama_generate, _qwen3_moe_forward], ids=["llama_generate", "qwen3_moe_forward"])
def test_transformers_models_record_the_same_rows(build: Callable[[], Callable[[], Any]]) -> None:
    """Tiny random transformers models (built from configs) under inference_mode, as serving code runs them;
    one untraced run first so lazy caches are built before either hunt."""
    run = build()

    def program() -> Any:
        with torch.inference_mode():
            return run()

    program()
    n, p = plain_program(program)
    assert torch.equal(n.out, p.out)
    assert len(n.trace.ops) > 300 and len(n.trace.copies) >= 8


# --- mixed: some ops declined, taken by Python -----------------------------------------------------------


class Tagged(torch.Tensor):
    """A minimal tensor subclass (same TensorImpl, another Python type): the compiled path declines it."""


def mixed_program() -> Any:
    """Plain tensors interleaved with a tensor subclass, a sparse tensor and a quantized one."""
    torch.manual_seed(0)
    x = torch.randn(4, 4)
    t = torch.randn(4, 4).as_subclass(Tagged)
    a = x + 1  # plain
    b = t * 2  # subclass input
    c = x.t().contiguous()  # plain copy
    d = t.clone()  # a copy of a subclass
    e = torch.cat([x, t.as_subclass(torch.Tensor), x])  # plain again
    f = torch.cat([x, t])  # a cat with a subclass source
    sp = torch.eye(4).to_sparse()
    g = torch.sparse.mm(sp, x)  # sparse: no storage
    h = x.to(torch.float16)  # plain
    x.add_(t)  # in place on a plain tensor, read from a subclass
    q = torch.quantize_per_tensor(x, 0.1, 0, torch.qint8)  # a quantized output: another TensorImpl
    i = q.dequantize() + 1
    return a, b, c, d, e, f, g, h, i


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # deprecated, still a TensorImpl we need
def test_mixed_program_takes_both_paths_and_records_the_same_rows() -> None:
    """The compiled recorder declines exactly the ops with a subclass, sparse or quantized tensor among the tensors it
    reads, writes or allocates (before touching any state); Python records those, the compiled path the rest,
    and the rows equal the all-Python run's."""
    n, p = both(mixed_program)
    declined = p.nonplain  # the all-Python run saw every op and which had a subclass or sparse tensor
    assert n.python_seqs == n.nonplain == declined
    assert 4 <= len(declined) < len(p.trace.ops) - 8  # both paths took a fair share
    ops_by_seq = {o.seq: o.op for o in p.trace.ops}
    assert {"aten.mul.Tensor", "aten.clone.default", "aten.cat.default", "aten.quantize_per_tensor.default",
            "aten.dequantize.self"} <= {ops_by_seq[s] for s in declined}


# --- copy facts the CPU cannot produce, driven straight into both recorders --------------------------------


def _drive(native: bool, calls: list[tuple[int, Plan, tuple[Any, ...], Any]]) -> CaptureResult:
    """Hand ``calls`` (seq, plan, args, out) to a fresh Recorder's compiled or Python path, as the mode does:
    the site is this function's caller (``sys._getframe(1)`` in ``__torch_dispatch__``)."""
    rec = Recorder(rule=None, stack_depth=4, track_modules=False, record_ops=True)
    if native:
        rec.start_native()
        assert rec.native_state is not None
    for seq, plan, args, out in calls:
        if native:
            assert rec.native_module.record(rec.native_state, seq, plan, args, {}, out) is True
        else:
            rec.record(seq, plan, args, {}, out, sys._getframe(1))
    rec.stop_native()
    rec.close()
    return rec.read()


def test_device_copy_facts_record_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy facts only a GPU gives (a value read to the host, a device-to-host copy) and facts the compiled
    path hands to ``Recorder._record_copy`` (sources as a list, a sparse destination), with meta tensors
    standing in for device ones: the same copy and op rows from both paths."""
    meta = torch.empty(2, 3, device="meta")
    host = torch.empty(2, 3)
    sparse = torch.eye(3).to_sparse()

    def plan(name: str, facts: Callable[[Any, Any, Any], CopyFacts]) -> Plan:
        return Plan(name, ((0, "self", READ),), False, False, None, facts)

    calls = [
        (0, plan("t.item", lambda a, k, o: CopyFacts((a[0],), torch.empty((), dtype=a[0].dtype), 4, to_host_value=True)), (meta,), 1.5),
        (1, plan("t.d2h", lambda a, k, o: CopyFacts((a[0],), o, 24)), (meta,), host),
        (2, plan("t.list_srcs", lambda a, k, o: CopyFacts([a[0], a[0]], o, 24)), (host,), host.t()),  # type: ignore[arg-type]
        (3, plan("t.sparse_dst", lambda a, k, o: CopyFacts((a[0],), sparse, 36, noop=True, exact=False)), (host,), host),
    ]
    handed: list[str] = []
    record_copy = Recorder._record_copy

    def spy(self: Recorder, seq: int, name: str, *a: Any) -> None:
        handed.append(name)
        record_copy(self, seq, name, *a)

    monkeypatch.setattr(Recorder, "_record_copy", spy)
    n, p = [_drive(flag, calls) for flag in (True, False)]  # one line: the same site
    # The compiled path handed the two copies it does not handle to the Python method, and only those.
    assert handed == ["t.list_srcs", "t.sparse_dst", "t.item", "t.d2h", "t.list_srcs", "t.sparse_dst"]
    assert (n.ops, n.copies, n.storages) == (p.ops, p.copies, p.storages)
    assert [(c.kind, c.src_device, c.dst_device, c.dst_storage) for c in n.copies[:2]] == [
        ("d2h", "meta", "cpu", None),
        ("d2h", "meta", "cpu", 1),
    ]
    assert n.copies[2].src_storages == (1, 1) and n.copies[3].dst_storage is None
    assert {o.site.file for o in n.ops if o.site is not None} == {__file__} and len(n.ops) == 4


# --- the loader -------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader's module-level cache reset for this test (restored afterwards)."""
    monkeypatch.setattr(native_recorder, "_tried", False)
    monkeypatch.setattr(native_recorder, "_loaded", None)
    monkeypatch.setattr(native_recorder, "_reason", None)


def _small() -> Any:
    x = torch.randn(3, 3)
    return x.t().contiguous() + 1


def test_native_off_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """COPYHUNT_NATIVE=0: no compiled recorder, every op to Python, and no note (the user asked for it)."""
    monkeypatch.setenv("COPYHUNT_NATIVE", "0")
    assert native_recorder.load() is None and native_recorder.unavailable_reason() == "COPYHUNT_NATIVE=0"
    r = hunted(_small, native=False)
    assert len(r.python_seqs) == len(r.trace.ops) > 0
    assert r.trace.meta.notes == ()


def test_a_failing_build_falls_back_to_python_and_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_loader: None) -> None:
    """A compiler that fails (CXX=/bin/false, an empty cache): the hunt still records, with the Python
    recorder, and the trace says once why the compiled one is not in use. Nothing half-built is left."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("COPYHUNT_CACHE_DIR", str(cache))
    monkeypatch.setenv("CXX", "/bin/false")
    r = hunted(_small, native=True)
    assert len(r.python_seqs) == len(r.trace.ops) > 0 and len(r.trace.copies) == 1
    assert r.trace.meta.notes == (
        "the compiled recorder is not in use (RuntimeError: the C++ build failed: exit 1); the Python recorder ran (slower)",
    )
    assert not list(cache.rglob("*.so"))
    # Tried once per process: a second hunt does not rebuild, and says it again once.
    r2 = hunted(_small, native=True)
    assert r2.trace.meta.notes == r.trace.meta.notes and len(r2.python_seqs) == len(r2.trace.ops)


def test_a_second_load_reuses_the_cached_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_loader: None) -> None:
    """A cached module is imported as is: with a compiler that would fail (CXX=/bin/false, ``_build``
    refusing) the load still succeeds, the file is untouched, and the hunt runs native."""
    built = native_recorder.load()
    assert built is not None and built.__file__ is not None
    cache = tmp_path / "cache"
    monkeypatch.setenv("COPYHUNT_CACHE_DIR", str(cache))
    target = cache / Path(built.__file__).parent.name / Path(built.__file__).name
    target.parent.mkdir(parents=True)
    target.write_bytes(Path(built.__file__).read_bytes())
    os.utime(target, (1_000_000_000, 1_000_000_000))
    monkeypatch.setattr(native_recorder, "_tried", False)
    monkeypatch.setattr(native_recorder, "_loaded", None)
    monkeypatch.setenv("CXX", "/bin/false")

    def no_build(target: Path) -> None:
        raise AssertionError("rebuilt a cached module")

    monkeypatch.setattr(native_recorder, "_build", no_build)
    mod = native_recorder.load()
    assert mod is not None and Path(mod.__file__) == target
    assert target.stat().st_mtime == 1_000_000_000
    assert native_recorder.unavailable_reason() is None
    r = hunted(_small, native=True)
    assert r.python_seqs == [] and r.trace.meta.notes == ()


def test_the_native_path_keeps_no_tensor_alive() -> None:
    """After a native hunt that saw a tensor (read, copied, watched), the tensor and its storage die with
    the program's last reference: the hunt keeps ids and weak handles only."""
    refs: dict[str, Any] = {}

    def program() -> None:
        x = torch.randn(16, 16)
        y = x.t().contiguous()  # a copy: both storages watched
        z = torch.cat([x, y]) + 1
        refs["x"], refs["y"], refs["z"] = x, y, z
        refs["weak"] = [weakref.ref(t) for t in (x, y, z)]
        refs["handles"] = [t.untyped_storage()._weak_ref() for t in (x, y, z)]

    r = hunted(program, native=True)
    assert r.python_seqs == []
    handles = refs.pop("handles")
    weak = refs.pop("weak")
    try:
        assert not any(torch.UntypedStorage._expired(h) for h in handles)
        refs.clear()  # the program's last references
        assert [w() for w in weak] == [None, None, None]
        assert all(torch.UntypedStorage._expired(h) for h in handles)
    finally:
        for h in handles:
            torch.UntypedStorage._free_weak_ref(h)
    # x, y, the cat (dead: only +1 of it kept) and z; the three kept alive at the hunt's end.
    assert [(s.nbytes, s.alive_at_end) for s in r.trace.storages] == [(1024, True), (1024, True), (2048, False), (2048, True)]


# --- the compiled dispatch path: the op's own errors and the bookkeeping's ------------------------------


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_an_op_that_raises_raises_as_untraced(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The op's exception reaches the program unchanged; the hunt goes on and records the next op."""
    monkeypatch.setenv("COPYHUNT_NATIVE", "1" if native else "0")
    a, b = torch.ones(2, 3), torch.ones(4, 5)
    with pytest.raises(RuntimeError) as untraced:
        a + b
    a + a  # the plan of add is known before the failing call: the compiled path takes it
    with copyhunt.hunt() as h:
        a + a
        with pytest.raises(RuntimeError) as traced:
            a + b
        c = a.clone()
    assert str(traced.value) == str(untraced.value)
    assert [o.op for o in h.trace.ops] == ["aten.add.Tensor", "aten.clone.default"]
    assert [o.seq for o in h.trace.ops] == [0, 2]  # the failed op took its number, as in Python
    assert torch.equal(c, a) and not h.trace.meta.notes


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_a_bookkeeping_error_is_noted_and_the_program_goes_on(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYHUNT_NATIVE", "1" if native else "0")

    def broken(args: Any, kwargs: Any, out: Any) -> CopyFacts:
        raise ValueError("boom")

    monkeypatch.setitem(COPY_OPS, torch.ops.aten.clone.default, broken)
    x = torch.arange(4.0)
    with copyhunt.hunt() as h:
        y = x.clone()
        z = y + 1
    assert torch.equal(z, torch.arange(1.0, 5.0))
    assert h.trace.meta.notes == ("copyhunt could not record aten.clone.default: ValueError: boom",)
    assert [o.op for o in h.trace.ops] == ["aten.add.Tensor"]  # the clone's row was never written


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_a_keyboard_interrupt_in_bookkeeping_is_raised(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only Exception is swallowed as our own error: Ctrl-C (and friends) reach the program, as in Python."""
    monkeypatch.setenv("COPYHUNT_NATIVE", "1" if native else "0")

    def interrupted(args: Any, kwargs: Any, out: Any) -> CopyFacts:
        raise KeyboardInterrupt

    monkeypatch.setitem(COPY_OPS, torch.ops.aten.clone.default, interrupted)
    x = torch.arange(4.0)
    with pytest.raises(KeyboardInterrupt):
        with copyhunt.hunt():
            x.clone()


def _copy_built(built: Any) -> Callable[[Path], None]:
    """A ``_build`` that copies the module this process already built (no compiler run in the test)."""

    def build(target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(built.__file__).read_bytes())

    return build


@pytest.fixture
def unwritable_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_loader: None) -> Path:
    """No writable cache home (``XDG_CACHE_HOME`` is a file), a temp folder of the test's own, and a
    ``_build`` that copies this process's module: returns that temp folder."""
    built = native_recorder.load()
    assert built is not None
    monkeypatch.setattr(native_recorder, "_tried", False)
    monkeypatch.setattr(native_recorder, "_loaded", None)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.delenv("COPYHUNT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(native_recorder.tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(native_recorder, "_build", _copy_built(built))
    return tmp


def test_an_unwritable_cache_home_builds_in_a_private_temp_folder(unwritable_home: Path) -> None:
    """No writable ``~/.cache``: the module goes to this user's own 0700 folder in the temp folder."""
    mod = native_recorder.load()
    private = unwritable_home / f"copyhunt-cache-{os.getuid()}"
    assert mod is not None and Path(mod.__file__).parent.parent == private
    assert private.stat().st_mode & 0o777 == 0o700


def test_a_temp_folder_others_can_write_is_refused(unwritable_home: Path) -> None:
    """A module is loaded from the cache, so a shared-writable temp cache is never used: Python recorder, with the reason."""
    shared = unwritable_home / f"copyhunt-cache-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    assert native_recorder.load() is None
    assert native_recorder.unavailable_reason() == f"RuntimeError: {shared} is not a private folder of this user"
    assert not list(shared.iterdir())


# --- building the records (native_recorder.cpp build_ops / build_storages) ------------------------------


def test_build_ops_builds_what_the_python_reader_builds() -> None:
    """Rows read by the C builder and by RawLog's Python loop give equal records, equal accesses shared."""
    from copyhunt.capture.raw import RawLog, _RECENT_ACCESSES
    from copyhunt.records import Access, Frame, OpRecord

    mod = native_recorder.load()
    assert mod is not None
    f = Frame("a.py", 3, "f")
    rows = [
        (0, "aten.add.Tensor", (0, 0, 64, True, 1, 16, 32, False), (2, 0, 64, True), (2,), (), 0, "M.l", None, 7, False, False),
        (1, "aten.copy_.default", (2, 0, 64, True), (0, 0, 64, True), (), (1,), None, None, "r", 7, True, True),
        (2, "aten.zero_.default", (), (), (), (), 0, None, None, 8, False, False),
    ]
    want = [OpRecord(seq=r[0], op=r[1], reads=tuple(Access(*r[2][i : i + 4]) for i in range(0, len(r[2]), 4)),
                     writes=tuple(Access(*r[3][i : i + 4]) for i in range(0, len(r[3]), 4)), allocs=r[4], frees=r[5],
                     site=None if r[6] is None else f, module=r[7], region=r[8], thread=r[9], is_copy=r[10],
                     captured_in_graph=r[11]) for r in rows]  # fmt: skip
    got = mod.build_ops(list(rows), [f], OpRecord, Access, _RECENT_ACCESSES)
    assert got == want
    assert got[0].writes[0] is got[1].reads[0]  # an equal access is one object
    log = RawLog()  # through the reader (no sites interned here: rows without one)
    log.ops = [r[:6] + (None,) + r[7:] for r in rows]
    res = log.read(devices=["cpu"] * 3, nbytes=[64, 64, 64], alive={1}, attribute=lambda st: (None, ()), notes=[], native=mod)
    assert res.ops == [dataclasses.replace(w, site=None) for w in want] and log.ops == []  # rows released
    assert [(s.id, s.device, s.nbytes, s.alive_at_end) for s in res.storages] == [(0, "cpu", 64, False), (1, "cpu", 64, True), (2, "cpu", 64, False)]


def test_build_ops_leaves_malformed_rows_to_the_python_reader() -> None:
    from copyhunt.capture.raw import _RECENT_ACCESSES
    from copyhunt.records import Access, OpRecord

    mod = native_recorder.load()
    assert mod is not None
    rows = [(0, "aten.add.Tensor", (0, 0, 64), (), (), (), None, None, None, 7, False, False)]
    with pytest.raises(ValueError, match="op row 0 is malformed"):
        mod.build_ops(rows, [], OpRecord, Access, _RECENT_ACCESSES)
    assert rows[0][2] == (0, 0, 64)  # untouched: RawLog._read reads them in Python instead
