#!/usr/bin/env bash
# Lead's first device batch of this session (one call): the torch.compile parts (issue 14) and
# `copyhunt verify` on the GPU demo (issue 11).
#     run(command="bash benchmarks/gpu_batch1.sh", carry=[".whl_moe"], timeout_s=600)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/copyhunt-b1}"
mkdir -p "$OUT"
echo "== verify on the GPU demo"
timeout 150 python3 -m copyhunt verify copyhunt_moe.demo:baseline --strict --no-progress > "$OUT/verify.txt" 2>&1
echo "verify rc=$?"; tail -25 "$OUT/verify.txt"
bash benchmarks/gpu_compile.sh
