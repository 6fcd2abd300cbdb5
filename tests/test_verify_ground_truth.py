"""copyhunt verify against ground truth: hand-written patches of the installed transformers code.

For a sample of sites, the copy is removed by hand the way its suggestion says (the function's source
with one line edited, compiled in place of the original for the test), the patched program is run, and
its outputs are compared with the untouched run by ``torch.equal``, not by anything of copyhunt's. The
verifier's status must agree: "verified" where the hand patch gives identical outputs and really
removes the copy, "refuted" where the hand-written suggestion raises or only moves the copy. The wrong
verdicts are the false positives issue 11 reported (forced into the trace: the rules no longer make them).

Programs: tiny random Llama ``generate()`` (6 prompt tokens + 4 greedy tokens, 2 layers) returning its
sequences, scores and cache, and T5's relative-position buckets. transformers 5.24.
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from dataclasses import replace
from typing import Any, Callable

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import transformers  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402

import copyhunt  # noqa: E402
from copyhunt.records import Finding, Trace  # noqa: E402
from copyhunt.verify import verify, warm_and_trace  # noqa: E402
from copyhunt.verify.run import seed_all  # noqa: E402

from test_real_models import LLAMA, _where  # noqa: E402

pytestmark = pytest.mark.skipif(transformers.__version__ != "5.24.0", reason="patches written for transformers 5.24.0")


def llama_program(attn: str) -> Callable[[], Any]:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**LLAMA)
    cfg._attn_implementation = attn
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(3, 256, (1, 6))

    def run() -> Any:
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                 return_dict_in_generate=True, output_scores=True)
        # Everything the program produced: the tokens, the processed scores, the whole KV cache.
        cache = out.past_key_values
        return (out.sequences, *out.scores, *(t for layer in cache.layers for t in (layer.keys, layer.values)))

    return run


def equal(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of two program results (tuples of tensors), by torch alone."""
    return len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.view(-1).view(torch.uint8), y.view(-1).view(torch.uint8))
                                    for x, y in zip(a, b))


def run(program: Callable[[], Any]) -> Any:
    seed_all()
    return program()


def patch_source(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, old: str, new: str) -> None:
    """Replace ``owner.name`` by its own source with the one line ``old`` edited to ``new`` (a hand patch)."""
    func = inspect.unwrap(inspect.getattr_static(owner, name))
    func = getattr(func, "__func__", func)  # staticmethod
    lines, start = inspect.getsourcelines(func)
    source = textwrap.dedent("".join(lines))
    assert source.count(old) == 1, (name, old)
    tree = ast.parse(source.replace(old, new))
    tree.body[0].decorator_list = []  # docstring decorators only
    ast.increment_lineno(tree, start - 1)  # the patched function keeps its file's line numbers
    namespace = dict(func.__globals__)
    exec(compile(tree, inspect.getsourcefile(func) or "<patch>", "exec"), namespace)
    patched = namespace[func.__name__]
    if isinstance(inspect.getattr_static(owner, name), staticmethod):
        patched = staticmethod(patched)
    monkeypatch.setattr(owner, name, patched)


def force(trace: Trace, file: str, line: int, verdict: str) -> Trace:
    """The trace with every copy at file:line judged ``verdict`` (the false positive issue 11 reported)."""
    f = Finding(verdict, "forced by the test: the verdict before issue 11", "forced")
    findings = dict(trace.findings or {})
    for i, c in enumerate(trace.copies):
        if c.site is not None and (c.site.file, c.site.line) == (file, line):
            findings[i] = (f,)
    return replace(trace, findings=findings)


def status(result: Any, file: str, line: int) -> Any:
    """The verification of the site at file:line in a verify result."""
    (site,) = [s for s in result.sites if s.plan.site is not None and (s.plan.site.file, s.plan.site.line) == (file, line)]
    return site.verification


MIN_NEW = ("generation.logits_process.MinNewTokensLengthLogitsProcessor.__call__", "scores_processed = scores.clone()")
KEYS = ("cache_utils.DynamicLayer.update", "self.keys = torch.cat([self.keys, key_states], dim=-2)")
LOGITS = ("generation.utils.GenerationMixin._sample",
          "next_token_logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)")
REPEAT_KV = ("models.llama.modeling_llama.repeat_kv", "return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)")
CONTIGUOUS = ("models.llama.modeling_llama.eager_attention_forward", "attn_output = attn_output.transpose(1, 2).contiguous()")


def copies_at(program: Callable[[], Any], file: str, line: int) -> int:
    seed_all()
    with copyhunt.hunt() as h:
        keep = program()
    del keep
    return sum(1 for c in h.trace.copies if c.site is not None and (c.site.file, c.site.line) == (file, line))


@pytest.fixture(scope="module")
def sdpa() -> tuple[Callable[[], Any], Trace, Any, Any]:
    """The sdpa Llama program, its trace, its untouched result, and one verify run over three sites."""
    program = llama_program("sdpa")
    trace = warm_and_trace(program)
    sites = [":".join(map(str, _where(*w))) for w in (MIN_NEW, KEYS, LOGITS)]
    return program, trace, run(program), verify(program, trace, sites=sites)


@pytest.fixture(scope="module")
def eager() -> tuple[Callable[[], Any], Trace, Any, Any]:
    """The eager-attention Llama program, with repeat_kv and the attention's .contiguous() forced to the
    verdict issue 11 reported for them (defensive-clone), verified once."""
    program = llama_program("eager")
    trace = warm_and_trace(program)
    forced = trace
    for where in (REPEAT_KV, CONTIGUOUS):
        forced = force(forced, *_where(*where), "defensive-clone")
    sites = [":".join(map(str, _where(*w))) for w in (REPEAT_KV, CONTIGUOUS)]
    return program, trace, run(program), verify(program, forced, sites=sites)


# --- verified: the hand patch removes the copy and changes nothing -----------------------------------------------


def test_min_new_tokens_clone_dead_store(sdpa, monkeypatch):
    program, trace, untouched, result = sdpa
    file, line = _where(*MIN_NEW)
    assert {c.verdict for c in trace.read_copies() if c.site.line == line and c.site.file == file} == {"dead-store"}
    assert status(result, file, line).status == "verified"
    patch_source(monkeypatch, transformers.generation.logits_process.MinNewTokensLengthLogitsProcessor, "__call__",
                 "scores_processed = scores.clone()", "scores_processed = scores")
    assert equal(run(program), untouched)
    assert copies_at(program, file, line) == 0


def test_first_cache_update_uses_the_new_keys(sdpa, monkeypatch):
    program, trace, untouched, result = sdpa
    file, line = _where(*KEYS)
    assert sorted(c.verdict for c in trace.read_copies() if (c.site.file, c.site.line) == (file, line)) == ["fresh-temporary"] * 2 + ["needed"] * 6
    assert status(result, file, line).status == "verified"
    patch_source(monkeypatch, transformers.cache_utils.DynamicLayer, "update",
                 "self.keys = torch.cat([self.keys, key_states], dim=-2)",
                 "self.keys = key_states if self.keys.numel() == 0 else torch.cat([self.keys, key_states], dim=-2)")
    assert equal(run(program), untouched)
    assert copies_at(program, file, line) == 6


def test_next_token_logits_copy(sdpa, monkeypatch):
    program, trace, untouched, result = sdpa
    text = LOGITS[1]
    file, line = _where(*LOGITS)
    assert {c.verdict for c in trace.read_copies() if (c.site.file, c.site.line) == (file, line)} == {"fresh-temporary"}
    assert status(result, file, line).status == "verified"
    patch_source(monkeypatch, transformers.generation.utils.GenerationMixin, "_sample", text,
                 "next_token_logits = outputs.logits[:, -1].to(dtype=torch.float32, device=input_ids.device)")
    assert equal(run(program), untouched)
    assert copies_at(program, file, line) == 0


# --- refuted: issue 11's false positives, forced; the hand-written suggestion fails ------------------------------


def test_repeat_kv_as_a_view_cannot_be_written(eager, monkeypatch):
    program, trace, untouched, result = eager
    text = REPEAT_KV[1]
    file, line = _where(*REPEAT_KV)
    v = status(result, file, line)
    assert v.status == "refuted"
    # The alias is the expanded keys themselves: the reshape's own view of them fails.
    assert v.detail.startswith("the program raised RuntimeError: view size is not compatible with input tensor's size and stride")
    assert v.detail.endswith(f"aten._unsafe_view.default (modeling_llama.py:{line})")
    # "Use the source (or a view of it)", written by hand: view() refuses the merged heads.
    patch_source(monkeypatch, modeling_llama, "repeat_kv", text, text.replace(".reshape(", ".view("))
    with pytest.raises(RuntimeError, match="view size is not compatible with input tensor's size and stride"):
        run(program)


def test_dropping_contiguous_before_a_reshape_only_moves_the_copy(eager, monkeypatch):
    program, trace, untouched, result = eager
    text = CONTIGUOUS[1]
    file, line = _where(*CONTIGUOUS)
    v = status(result, file, line)
    assert v.status == "refuted"
    assert "which ran aten.clone.default where the untouched run ran aten.view.default" in v.detail
    # By hand: the same results, but the caller's reshape now copies: no copy was saved.
    patch_source(monkeypatch, modeling_llama, "eager_attention_forward", text, "attn_output = attn_output.transpose(1, 2)")
    assert equal(run(program), untouched)
    assert copies_at(program, file, line) == 0
    before = len(trace.copies)
    seed_all()
    with copyhunt.hunt() as h:
        keep = program()
    del keep
    assert len(h.trace.copies) == before


def test_t5_long_cast_by_destination_passing_cannot_be_written(monkeypatch):
    t5 = transformers.models.t5.modeling_t5.T5Attention
    rel = torch.arange(7)[None, :] - torch.arange(7)[:, None]

    def program() -> Any:  # looks the method up at each call: the hand patch replaces it
        return t5._relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)

    untouched = run(program)
    trace = warm_and_trace(program)
    path = "models.t5.modeling_t5.T5Attention._relative_position_bucket"
    file, line = _where(path, "        ).to(torch.long)")
    v = status(verify(program, force(trace, file, line, "fresh-temporary"), sites=[f"{file}:{line}"]), file, line)
    assert v.status == "refuted"
    assert "aten.mul.Tensor(..., out=<torch.int64>) raises: result type Float can't be cast to the desired output type Long" in v.detail
    # By hand: let the multiplication write int64 itself (out=), instead of casting its float result.
    patch_source(
        monkeypatch, transformers.models.t5.modeling_t5.T5Attention, "_relative_position_bucket",
        "        torch.log(relative_position.float() / max_exact)\n        / math.log(max_distance / max_exact)\n"
        "        * (num_buckets - max_exact)\n    ).to(torch.long)",
        "        torch.mul(torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact),\n"
        "                  num_buckets - max_exact, out=torch.empty(relative_position.shape, dtype=torch.long))\n    )",
    )
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        run(program)
    assert untouched.dtype == torch.int64
