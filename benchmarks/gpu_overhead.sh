#!/usr/bin/env bash
# Issue 17's GPU table (capture cost vs a bare mode and torch.profiler), one call on the device machine
# (torch 2.11, no pytest needed; about 2-3 minutes):
#   run(command="bash benchmarks/gpu_overhead.sh", timeout_s=300)
# Prints the tables and writes $OUT/device_overhead.json.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/copyhunt-overhead}"
mkdir -p "$OUT"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
timeout 220 python3 benchmarks/device_overhead.py --reps "${REPS:-5}" --json "$OUT/device_overhead.json" 2>&1 \
    | grep -v '^STAGE:\|USDT\|profiler_st' | tee "$OUT/device_overhead.txt"
