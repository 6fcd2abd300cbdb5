"""Real programs: tiny random transformers models (built from configs, never downloaded) traced end to end.

Each workload runs three ways on the same model and inputs:
- untraced, under ``torch.no_grad()``: the program as it runs without copyhunt;
- under the independent reference counter (``tests/copy_reference.py``), also under ``no_grad``,
  where torch's C++ dispatcher runs the composite kernels before any mode sees an op;
- under ``copyhunt.hunt()`` inside ``torch.inference_mode()``, the hard case: there composite ops reach the
  hunt undecomposed (what serving stacks and ``generate()`` callers run).

copyhunt must agree with the reference on every (file, line, op): copy count, bytes and no-op copies; the
outputs must be bit-identical. Lines come from the running code (no version's lines are written here); the
hand-checked anchors below locate their line by its source text at test time.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from configs: nothing may be fetched
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import transformers  # noqa: E402

from copyhunt.hunting import hunt  # noqa: E402
from copyhunt.records import Trace  # noqa: E402

from copy_reference import CopyCounter  # noqa: E402 - tests/ is on sys.path (rootdir conftest)

Table = dict[tuple[str, int, str], tuple[int, int, int]]  # (file, line, op) -> (copies, bytes, no-op copies)

# Prompt of 6 tokens, 4 new tokens by greedy search: 4 forward passes (prefill of 6, then 1, 1, 1).
PROMPT, NEW = 6, 4
LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip


def _generate(model: Any, ids: torch.Tensor, **kw: Any) -> Callable[[], Any]:
    return lambda: model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **kw)


def _llama(cache: str) -> Callable[[], Any]:
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    ids = torch.randint(3, 256, (1, PROMPT))
    return _generate(model, ids, cache_implementation=cache) if cache != "dynamic" else _generate(model, ids)


def _qwen3_moe(experts: str) -> Callable[[], Any]:
    cfg = transformers.Qwen3MoeConfig(**LLAMA, moe_intermediate_size=64, head_dim=16, num_experts=8, num_experts_per_tok=2)
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    x = torch.randint(3, 256, (2, 7))

    def run() -> Any:
        model.config._experts_implementation = experts  # read at call time by the experts interface
        return model(x).logits

    return run


def _gpt2() -> Callable[[], Any]:
    cfg = transformers.GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128, pad_token_id=0,
                                  bos_token_id=1, eos_token_id=2)  # fmt: skip
    return _generate(transformers.GPT2LMHeadModel(cfg).eval(), torch.randint(3, 256, (1, PROMPT)))


def _bert() -> Callable[[], Any]:
    cfg = transformers.BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=128)  # fmt: skip
    model = transformers.BertModel(cfg).eval()
    x = torch.randint(3, 256, (2, 7))
    return lambda: model(x, attention_mask=torch.ones_like(x)).last_hidden_state


def _t5_encoder() -> Callable[[], Any]:
    cfg = transformers.T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    model = transformers.T5EncoderModel(cfg).eval()
    x = torch.randint(3, 256, (2, 7))
    return lambda: model(x).last_hidden_state


WORKLOADS: dict[str, Callable[[], Callable[[], Any]]] = {
    "llama_generate_dynamic_cache": lambda: _llama("dynamic"),
    "llama_generate_static_cache": lambda: _llama("static"),
    "qwen3_moe_forward_grouped_mm_experts": lambda: _qwen3_moe("grouped_mm"),
    "qwen3_moe_forward_eager_experts": lambda: _qwen3_moe("eager"),
    "gpt2_generate": _gpt2,
    "bert_encoder": _bert,
    "t5_encoder": _t5_encoder,
}


@dataclass
class Result:
    untraced: Any
    reference: Table
    reference_out: Any
    trace: Trace
    traced: Any


def table(trace: Trace) -> Table:
    out: dict[tuple[str, int, str], list[int]] = {}
    for c in trace.copies:
        key = (c.site.file, c.site.line, c.op) if c.site is not None else ("?", 0, c.op)
        row = out.setdefault(key, [0, 0, 0])
        row[0] += 1
        row[1] += c.bytes
        row[2] += c.noop
    return {k: (n, b, z) for k, (n, b, z) in out.items()}


@pytest.fixture(scope="module")
def results() -> Callable[[str], Result]:
    """Each workload built and run once per module (three runs: untraced, reference, hunt)."""
    done: dict[str, Result] = {}

    def get(name: str) -> Result:
        if name not in done:
            torch.manual_seed(0)
            run = WORKLOADS[name]()
            with torch.no_grad():
                untraced = run()
            with torch.no_grad(), CopyCounter() as ref:
                ref_out = run()
            with torch.inference_mode(), hunt() as h:
                traced = run()
            assert h.trace is not None
            done[name] = Result(untraced, ref.table(), ref_out, h.trace, traced)
        return done[name]

    return get


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_hunt_agrees_with_the_reference_site_by_site(results: Callable[[str], Result], name: str) -> None:
    r = results(name)
    got = table(r.trace)
    assert got == r.reference
    assert r.trace.meta.notes == ()  # nothing failed inside the recorder
    assert {c.kind for c in r.trace.copies} <= {"d2d"}  # all on the CPU


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_outputs_are_bit_identical_traced_and_untraced(results: Callable[[str], Result], name: str) -> None:
    r = results(name)
    assert torch.equal(r.traced, r.untraced) and torch.equal(r.reference_out, r.untraced)


# --- hand-checked anchors (transformers 5.24: code moves between versions) --------------------------


def _where(path: str, snippet: str) -> tuple[str, int]:
    """(file, line) of the one line containing ``snippet`` in the source of ``transformers.<path>``
    (a function or method, so that the same text elsewhere in the file cannot match)."""
    import importlib

    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module("transformers." + ".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        break
    obj = inspect.unwrap(obj)
    source, start = inspect.getsourcelines(obj)
    lines = [start + i for i, text in enumerate(source) if snippet in text]
    assert len(lines) == 1, f"{snippet!r} found at lines {lines} of {path}"
    file = inspect.getsourcefile(obj)
    assert file is not None
    return file, lines[0]


K_CAT = ("cache_utils.DynamicLayer.update", "self.keys = torch.cat([self.keys, key_states], dim=-2)", "aten.cat.default")
V_CAT = ("cache_utils.DynamicLayer.update", "self.values = torch.cat([self.values, value_states], dim=-2)", "aten.cat.default")
NEXT_LOGITS = ("generation.utils.GenerationMixin._sample", "next_token_logits = outputs.logits[:, -1].to(", "aten._to_copy.default")
ROPE_LLAMA = ("models.llama.modeling_llama.rotate_half", "return torch.cat((-x2, x1), dim=-1)", "aten.cat.default")
ROPE_QWEN = ("models.qwen3_moe.modeling_qwen3_moe.rotate_half", "return torch.cat((-x2, x1), dim=-1)", "aten.cat.default")
ONE_HOT = ("models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeExperts.forward", "expert_mask = torch.nn.functional.one_hot(")
GROUPED_MM = "integrations.moe.grouped_mm_experts_forward"
T5_BUCKET = "models.t5.modeling_t5.T5Attention._relative_position_bucket"

# name -> (total copies, total bytes, [(function, source text, op, copies, bytes)]); float32 = 4 B, int64 = 8 B.
ANCHORS: dict[str, tuple[int, int, list[tuple[str, str, str, int, int]]]] = {
    "llama_generate_dynamic_cache": (68, 35860, [
        # One cat per layer per forward, for K and for V: 2 layers x 4 forwards = 8 each. The cache holds
        # 6, 7, 8, 9 tokens x (2 kv heads x 16 dims x 4 B = 128 B) = 30 x 128 = 3840 B per layer, x 2 layers.
        (*K_CAT, 8, 7680),
        (*V_CAT, 8, 7680),
        # rotate_half on q (4 heads) and k (2 heads), per layer per forward: 2 x 4 x 2 = 16 cats;
        # 9 positions (6 + 1 + 1 + 1) x (4 + 2 heads x 16 dims x 4 B = 384 B) x 2 layers = 6912 B.
        (*ROPE_LLAMA, 16, 6912),
        # greedy search copies the last position's logits to float32 once per step: 4 x 256 x 4 B.
        (*NEXT_LOGITS, 4, 4096),
    ]),  # fmt: skip
    "llama_generate_static_cache": (68, 25108, [
        # The static cache writes only the new positions: index_copy_ of 6 tokens, then 1, 1, 1, per layer:
        # 9 tokens x 128 B x 2 layers = 2304 B for K, the same for V; no cat of the whole cache.
        ("cache_utils.StaticLayer.update", "self.keys.index_copy_(2, cache_position, key_states)", "aten.index_copy_.default", 8, 2304),
        ("cache_utils.StaticLayer.update", "self.values.index_copy_(2, cache_position, value_states)", "aten.index_copy_.default", 8, 2304),
        (*K_CAT, 0, 0),
        (*ROPE_LLAMA, 16, 6912),
    ]),  # fmt: skip
    "qwen3_moe_forward_grouped_mm_experts": (14, 19068, [
        # One forward of 2 x 7 tokens: K and V cats of 2 x 2 kv heads x 7 x 16 x 4 B = 1792 B per layer.
        (*K_CAT, 2, 3584),
        # rotate_half: q 2 x 4 x 7 x 16 x 4 B = 3584 B, k 1792 B, per layer: 2 x 5376 B.
        (*ROPE_QWEN, 4, 10752),
        # 14 tokens x top-2 = 28 routed rows per layer: the CPU-only float cast for histc (28 x 4 B)
        # and the inverse permutation written with index_put_ (28 x 8 B).
        (GROUPED_MM, 'histc_input = expert_ids_g.float() if device.type in ("cpu", "mps")', "aten._to_copy.default", 2, 224),
        (GROUPED_MM, "inv_perm[perm] = torch.arange(perm.size(0), device=device)", "aten.index_put_.default", 2, 448),
    ]),  # fmt: skip
    "qwen3_moe_forward_eager_experts": (10, 18396, [
        # The router's one_hot is zeros + scatter_ (its Python decomposition added an int64 _to_copy).
        (*ONE_HOT, "aten._to_copy.default", 0, 0),
        (*K_CAT, 2, 3584),
        (*ROPE_QWEN, 4, 10752),
    ]),  # fmt: skip
    "gpt2_generate": (44, 43696, [
        # 4 heads x 16 dims x 4 B = 256 B per cached token; 30 tokens over the 4 steps, x 2 layers.
        (*K_CAT, 8, 15360),
        (*V_CAT, 8, 15360),
        (*NEXT_LOGITS, 4, 4096),
        # Eval-mode dropout returns its input: no copy (the Python decomposition cloned it).
        ("models.gpt2.modeling_gpt2.GPT2Attention.forward", "attn_output = self.resid_dropout(attn_output)", "aten.clone.default", 0, 0),
        ("models.gpt2.modeling_gpt2.GPT2Model.forward", "hidden_states = self.drop(hidden_states)", "aten.clone.default", 0, 0),
    ]),  # fmt: skip
    "bert_encoder": (1, 14, [
        # The only copy: the 2 x 7 attention mask cast to bool (1 B each). No dropout clone anywhere.
        ("masking_utils._preprocess_mask_arguments", "attention_mask = attention_mask.to(device=inputs_embeds.device, dtype=torch.bool)", "aten._to_copy.default", 1, 14),
        ("models.bert.modeling_bert.BertEmbeddings.forward", "embeddings = self.dropout(embeddings)", "aten.clone.default", 0, 0),
    ]),  # fmt: skip
    "t5_encoder": (5, 2548, [
        # Relative position buckets of a 7 x 7 grid: an int64 cast (392 B) and a float cast (196 B).
        (T5_BUCKET, "relative_buckets += (relative_position > 0).to(torch.long) * num_buckets", "aten._to_copy.default", 1, 392),
        (T5_BUCKET, "torch.log(relative_position.float() / max_exact)", "aten._to_copy.default", 1, 196),
        ("models.t5.modeling_t5.T5LayerFF.forward", "hidden_states = hidden_states + self.dropout(forwarded_states)", "aten.clone.default", 0, 0),
    ]),  # fmt: skip
}


@pytest.mark.skipif(transformers.__version__ != "5.24.0", reason="anchors were checked by hand on transformers 5.24.0")
@pytest.mark.parametrize("name", list(ANCHORS))
def test_hand_checked_anchors(results: Callable[[str], Result], name: str) -> None:
    r = results(name)
    total, nbytes, rows = ANCHORS[name]
    assert (len(r.trace.copies), r.trace.total_bytes) == (total, nbytes)
    got = table(r.trace)
    for where, snippet, op, count, b in rows:
        file, line = _where(where, snippet)
        assert got.get((file, line, op), (0, 0, 0))[:2] == (count, b), (where, line, snippet)
        assert r.reference.get((file, line, op), (0, 0, 0))[:2] == (count, b), "the reference disagrees"


def test_no_copy_on_any_dropout_or_one_hot_line(results: Callable[[str], Result]) -> None:
    import linecache

    for name in WORKLOADS:
        for c in results(name).trace.copies:
            assert c.site is not None
            text = linecache.getline(c.site.file, c.site.line)
            assert "dropout" not in text and "drop(" not in text and "one_hot" not in text, (name, c.site, text)


def test_one_hot_runs_its_real_kernel_in_the_router(results: Callable[[str], Result]) -> None:
    # The eager experts' router line runs what the untraced program runs: zeros + scatter_ (after the
    # min/max item() checks), not eq + _to_copy.
    file, line = _where(*ONE_HOT)
    ops = [o.op for o in results("qwen3_moe_forward_eager_experts").trace.ops if o.site and (o.site.file, o.site.line) == (file, line)]
    per_layer = ["aten.aminmax.default", "aten._local_scalar_dense.default", "aten._local_scalar_dense.default",
                 "aten.zeros.default", "aten.unsqueeze.default", "aten.scatter_.value"]  # fmt: skip
    assert ops == per_layer * 2


# --- the grad modes agree on real models ---------------------------------------------------------------


def _hunt_in(mode: str, build: Callable[[], Callable[[], Any]]) -> tuple[Table, list[str]]:
    torch.manual_seed(0)
    run = build()
    ctx = {"normal": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
           "inference_tensors": torch.no_grad}[mode]  # fmt: skip
    with ctx(), hunt() as h:
        run()
    assert h.trace is not None
    return table(h.trace), [o.op for o in h.trace.ops]


def _bert_inference_tensors() -> Callable[[], Any]:
    """BERT whose weights and inputs are inference tensors (made under inference_mode), run outside it."""
    cfg = transformers.BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=128)  # fmt: skip
    with torch.inference_mode():
        model = transformers.BertModel(cfg).eval()
        x = torch.randint(3, 256, (2, 7))
    assert x.is_inference() and next(model.parameters()).is_inference()
    return lambda: model(x, attention_mask=torch.ones_like(x)).last_hidden_state


def test_bert_records_the_same_ops_and_copies_in_every_grad_mode() -> None:
    no_grad = _hunt_in("no_grad", _bert)
    assert sum(n for n, _, _ in no_grad[0].values()) == 1  # the mask cast (see the anchors)
    assert _hunt_in("inference_mode", _bert) == no_grad
    assert _hunt_in("inference_tensors", _bert_inference_tensors) == no_grad
    # With grad on, autograd adds detach() views of the tensors it saves (sdpa's and tanh's outputs:
    # 3 in all), as it does untraced; the copies are the same.
    normal = _hunt_in("normal", _bert)
    assert normal[0] == no_grad[0]
    assert [op for op in normal[1] if op != "aten.detach.default"] == no_grad[1]
    assert normal[1].count("aten.detach.default") == 3
