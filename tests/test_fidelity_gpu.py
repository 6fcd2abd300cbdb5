"""Capture fidelity on a real GPU: device copies made inside C++ land on their Python line (run on the
device machine; skipped cleanly without a GPU). The CPU side of the join: test_device_attribution.py."""

from __future__ import annotations

import inspect
import os

import pytest
import torch
import torch.nn.functional as F

from copyhunt.hunting import hunt

pytestmark = pytest.mark.gpu


def _line() -> int:
    return inspect.currentframe().f_back.f_lineno  # type: ignore[union-attr]


def test_host_reads_are_d2h_copies_on_their_lines() -> None:
    x = torch.arange(6, dtype=torch.float32, device="cuda")
    torch.cuda.synchronize()
    lines = {}
    with hunt(device_trace=True) as h:
        lines["item"] = _line() + 1
        a = x[2].item()
        lines["bool"] = _line() + 1
        b = bool(x[3] > 1)
        lines["tolist"] = _line() + 1
        c = x.tolist()
    assert (a, b, c) == (2.0, True, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    by_line = {c.site.line: c for c in h.copies if c.site is not None}
    item, flag, lst = by_line[lines["item"]], by_line[lines["bool"]], by_line[lines["tolist"]]
    # item(): one float32 element; bool(): one bool element; tolist(): the 6 float32 elements.
    assert (item.op, item.kind, item.bytes, item.dst_device) == ("aten._local_scalar_dense.default", "d2h", 4, "cpu")
    assert (flag.op, flag.kind, flag.bytes) == ("aten._local_scalar_dense.default", "d2h", 1)
    assert (lst.op, lst.kind, lst.bytes) == ("aten._to_copy.default", "d2h", 24)
    for c in (item, flag, lst):
        assert c.origin == "dispatch" and c.device is not None and c.device.name.startswith("Memcpy DtoH")
    assert [c for c in h.copies if c.site is None] == []
    assert h.trace.meta.device_join["no_site"] == 0


def test_tensor_constructor_on_a_device_is_an_h2d_copy_on_its_line() -> None:
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    with hunt(device_trace=True) as h:
        ln = _line() + 1
        t = torch.tensor([1.0, 2.0, 3.0], device="cuda", dtype=torch.float64)
    assert t.tolist() == [1.0, 2.0, 3.0] and t.device.type == "cuda"
    (c,) = [c for c in h.copies if c.site is not None and c.site.line == ln]
    assert (c.op, c.kind, c.bytes, c.origin) == ("aten._to_copy.default", "h2d", 24, "dispatch")
    assert c.device is not None and c.device.name.startswith("Memcpy HtoD")
    assert [c for c in h.copies if c.site is None] == []
    assert not torch._C._only_lift_cpu_tensors()  # restored after the hunt


def test_copy_inside_a_non_copy_op_gets_its_line_module_and_region() -> None:
    import copyhunt

    x = torch.randn(64, 32, device="cuda")
    mask = x[:, 0] > 0
    torch.cuda.synchronize()
    with hunt(device_trace=True) as h:
        with copyhunt.region("select"):
            ln = _line() + 1
            y = x[mask]  # aten.index: its hidden nonzero reads the count back to the host
    assert y.shape[0] == int(mask.sum())
    inside = [c for c in h.copies if c.origin == "device" and c.site is not None and c.site.line == ln]
    assert inside and all(c.region == "select" for c in inside)
    assert {c.op for c in inside} <= {"aten.index.Tensor"} and "d2h" in {c.kind for c in inside}
    assert [c for c in h.copies if c.site is None] == []


@pytest.mark.parametrize("grad", ["no_grad", "inference_mode"])
def test_eval_dropout_aliases_on_the_gpu(grad: str) -> None:
    x = torch.randn(8, 8, device="cuda")
    with (torch.inference_mode() if grad == "inference_mode" else torch.no_grad()):
        with hunt(device_trace=True) as h:
            y = F.dropout(x, 0.1, training=False)
    assert y.data_ptr() == x.data_ptr() and h.copies == ()


def test_transformers_moe_generate_every_device_copy_has_a_line() -> None:
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = transformers.Qwen3MoeForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(3, 256, (1, 6), device="cuda")
    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    ref = model.generate(ids, **kw)
    with hunt(device_trace=True) as h:
        got = model.generate(ids, **kw)
    assert torch.equal(ref, got)
    assert len(h.copies) > 0 and [c for c in h.copies if c.site is None] == []
    assert h.trace.meta.device_join["no_site"] == 0
