"""CPU probe (issue 14): how many aten::_local_scalar_dense ops Inductor runs inside torch.compile's compile ranges
while compiling the bf16 Llama of benchmarks/gpu_compile.py (caches off, as in a hunt). Run from the repo root:
    PYTHONPATH=. python benchmarks/compile_time_items_probe.py
"""
import torch, json, sys
sys.path.insert(0, ".")
import torch._inductor.config as ic, torch._functorch.config as fc
from transformers import LlamaConfig, LlamaForCausalLM
from copyhunt import kineto
from copyhunt.capture import device
cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).eval().to(torch.bfloat16)
ids = torch.randint(3, 256, (2, 12), generator=torch.Generator().manual_seed(1))
model.forward = torch.compile(model.forward)
with ic.patch(fx_graph_cache=False), fc.patch(enable_autograd_cache=False), torch.no_grad(), \
     torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
    model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, cache_implementation="static", disable_compile=True)
p.export_chrome_trace("/tmp/copyhunt_llama_probe.json")
kt = kineto.parse(json.load(open("/tmp/copyhunt_llama_probe.json")))
ct = device._CompileTime(kt, {})
items = [e for e in kt.cpu_ops if e.name == "aten::_local_scalar_dense"]
inside = [e for e in items if ct.compile_end(e) is not None]
outer = sorted({ct.compile_end(e) for e in inside})
print("local_scalar_dense:", len(items), "inside compile ranges:", len(inside), "per compile:", [sum(ct.compile_end(e)==o for e in inside) for o in outer])
