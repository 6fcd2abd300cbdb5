"""The 2-rank job `benchmarks/gpu_ranks.py` traces: every rank does its GPU work on one shared GPU
(``cuda:0``; gloo for the collectives, as NCCL needs one GPU per rank), or on the CPU without CUDA.

Copies per rank r, counted here (the checker in gpu_ranks.py expects exactly these):
- on a GPU: r + 1 transposes made contiguous (d2d, 256 KiB each), one h2d (4 KiB), one d2h (1 KiB);
- on the CPU: only the r + 1 transposes (``.to("cpu")`` of a CPU tensor copies nothing).
One all_reduce of 16 B per rank (a collective row, not a copy). ``--one-gpu-per-rank`` puts rank r
on ``cuda:<local_rank>`` with NCCL (issue 19's two-GPU run; not run on one GPU).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

one_gpu_per_rank = "--one-gpu-per-rank" in sys.argv[1:]
cuda = torch.cuda.is_available()
local_rank = int(os.environ.get("LOCAL_RANK", "0"))
dev = torch.device(f"cuda:{local_rank if one_gpu_per_rank else 0}" if cuda else "cpu")
if cuda:
    torch.cuda.set_device(dev)
dist.init_process_group("nccl" if one_gpu_per_rank else "gloo")
rank = dist.get_rank()
a = torch.randn(256, 256, device=dev)
for _ in range(rank + 1):
    b = a.t().contiguous()  # COPY: d2d, 256 KiB
h = torch.ones(1024).to(dev)  # COPY on a GPU: h2d, 4 KiB
c = a.sum(0).to("cpu")  # COPY on a GPU: d2h, 1 KiB
t = torch.ones(4, device=dev if one_gpu_per_rank else "cpu")
dist.all_reduce(t)  # COLLECTIVE: 16 B
if cuda:
    torch.cuda.synchronize()
assert float(t[0]) == dist.get_world_size()
dist.destroy_process_group()
