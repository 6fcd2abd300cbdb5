#!/usr/bin/env bash
# Issue 19, one call on the device machine (2 GPUs; about 2-4 minutes):
#   run(command="bash benchmarks/gpu_tp_moe.sh", kind="nvidia-h200-x2", timeout_s=300)
# TP2 MoE (MiniMax M2.5 shapes, N=768 per rank, NCCL all_reduce per layer) under `copyhunt trace`
# with device capture on both ranks: baseline and fixed run folders, merged tables, per-rank checks;
# untraced A/B per rank at M = 1, 64, 1024; a traced baseline at those M for the copies' device time
# (ideal). Writes $OUT/tp_moe/{gpu_tp_moe.json, env.txt, log.txt, baseline/, fixed/, bench/, ideal/}
# and packs it as $OUT/gpu_tp_moe.tgz.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/copyhunt-tp-moe}"
mkdir -p "$OUT/tp_moe"
{ python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])'; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvidia-smi topo -m; } 2>&1 | tee "$OUT/tp_moe/env.txt"
timeout 270 python3 benchmarks/gpu_tp_moe.py --out "$OUT/tp_moe" --timeout 100 "$@" 2>&1 | tee "$OUT/tp_moe/log.txt" | tail -120
rc=${PIPESTATUS[0]}
tar czf "$OUT/gpu_tp_moe.tgz" -C "$OUT" tp_moe
echo "gpu_tp_moe rc=$rc"
exit $rc
