#!/usr/bin/env bash
# Issue 13 item 6, one call on the device machine (about 1-2 minutes):
#   run(command="bash benchmarks/gpu_ranks.sh", timeout_s=300)
# A 2-rank torchrun job sharing the one GPU (gloo collectives) traced with device capture on both
# ranks; prints the merged table with per-rank device times and a per-rank check; writes
# $OUT/ranks/gpu_ranks.json, merged_table.txt and the run folder (packed as $OUT/gpu_ranks.tgz).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/copyhunt-ranks}"
mkdir -p "$OUT/ranks"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' 2>&1 | tee "$OUT/ranks/env.txt"
timeout 240 python3 benchmarks/gpu_ranks.py --out "$OUT/ranks" 2>&1 | tee "$OUT/ranks/log.txt" | tail -60
rc=${PIPESTATUS[0]}
tar czf "$OUT/gpu_ranks.tgz" -C "$OUT" ranks
echo "gpu_ranks rc=$rc"
exit $rc
