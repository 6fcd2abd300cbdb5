"""Real programs for the verdict-precision measurements (issue 11): tiny random transformers models built
from configs (never downloaded) and the bundled MoE demo. Each entry builds its model once and returns a
program: a function of no arguments that runs the workload and returns what it produced.

Used by ``benchmarks/precision.py`` (every program, every site) and by the verify tests (a few).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from configs: nothing may be fetched
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

Program = Callable[[], Any]

# 6 prompt tokens, 4 new tokens by greedy search (4 forward passes), 2 layers, 4 heads (2 kv heads).
LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
PROMPT, NEW = 6, 4


def _generate(model: Any, ids: torch.Tensor, **kw: Any) -> Program:
    def run() -> Any:
        with torch.inference_mode():
            return model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **kw)

    return run


def _forward(model: Any, x: torch.Tensor, **kw: Any) -> Program:
    def run() -> Any:
        with torch.inference_mode():
            out = model(x, **kw)
            return out.logits if hasattr(out, "logits") else out.last_hidden_state

    return run


def llama(cache: str = "dynamic", attn: str = "sdpa") -> Program:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**LLAMA)
    cfg._attn_implementation = attn
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(3, 256, (1, PROMPT))
    return _generate(model, ids, **({} if cache == "dynamic" else {"cache_implementation": cache}))


def mixtral() -> Program:
    import transformers

    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(transformers.MixtralConfig(**LLAMA, num_local_experts=8, num_experts_per_tok=2)).eval()
    return _generate(model, torch.randint(3, 256, (1, PROMPT)))


def qwen3_moe(experts: str) -> Program:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Qwen3MoeConfig(**LLAMA, moe_intermediate_size=64, head_dim=16, num_experts=8, num_experts_per_tok=2)
    cfg._experts_implementation = experts
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    return _forward(model, torch.randint(3, 256, (2, 7)))


def gpt2() -> Program:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128, pad_token_id=0,
                                  bos_token_id=1, eos_token_id=2)  # fmt: skip
    return _generate(transformers.GPT2LMHeadModel(cfg).eval(), torch.randint(3, 256, (1, PROMPT)))


def bert() -> Program:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=128)  # fmt: skip
    model = transformers.BertModel(cfg).eval()
    x = torch.randint(3, 256, (2, 7))
    return _forward(model, x, attention_mask=torch.ones_like(x))


def t5(generate: bool) -> Program:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    x = torch.randint(3, 256, (2, 7))
    if generate:
        return _generate(transformers.T5ForConditionalGeneration(cfg).eval(), x)
    return _forward(transformers.T5EncoderModel(cfg).eval(), x)


def moe_demo() -> Program:
    from copyhunt_moe import demo

    return demo.baseline


#: name -> builder of the program (models are built when the builder is called).
PROGRAMS: dict[str, Callable[[], Program]] = {
    "llama_generate_dynamic_cache": lambda: llama("dynamic"),
    "llama_generate_static_cache": lambda: llama("static"),
    "llama_generate_eager_attention": lambda: llama("dynamic", "eager"),
    "mixtral_generate": mixtral,
    "qwen3_moe_forward_grouped_mm": lambda: qwen3_moe("grouped_mm"),
    "qwen3_moe_forward_eager_experts": lambda: qwen3_moe("eager"),
    "gpt2_generate": gpt2,
    "bert_encoder": bert,
    "t5_encoder": lambda: t5(False),
    "t5_generate": lambda: t5(True),
    "moe_demo_baseline": moe_demo,
}
