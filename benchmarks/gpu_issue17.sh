#!/usr/bin/env bash
# Issue 17 on the GPU host, one device call (torch 2.11 there; pytest from carried wheels):
#     run(command="bash benchmarks/gpu_issue17.sh", carry=[".whl_moe"], timeout_s=600)
# 1. the compiled recorder builds and loads on that torch; 2. the GPU table (device_overhead.py);
# 3. the CPU loop and Llama tables on a quiet 16-core host (overhead.py); 4. the GPU tests, the
# recorder-equivalence and Dynamo-switch tests; 5. `copyhunt trace` on the demo. Files under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/copyhunt-issue17}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" COPYHUNT_CACHE_DIR="$OUT/cache"
if ! python3 -c "import pytest" 2>/dev/null && ls .whl_moe/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lead_site .whl_moe/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/lead_site"
fi
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(), "cpus", __import__("os").cpu_count())' | tee "$OUT/env.txt"
echo "== 1. compiled recorder"
python3 -c '
import time; t = time.perf_counter()
from copyhunt.capture import native_recorder as n, dispatch
m = n.load(); print("native:", m is not None, n.unavailable_reason(), f"{time.perf_counter()-t:.1f} s", "own dynamo switch:", dispatch._OWN_DYNAMO_SWITCH)' 2>&1 | tee "$OUT/native.txt"
echo "== 2. GPU table"
timeout 240 python3 benchmarks/device_overhead.py --reps "${REPS:-5}" --json "$OUT/device_overhead.json" 2>&1 \
    | grep -v '^STAGE:\|USDT\|profiler_st' | tee "$OUT/device_overhead.txt"
echo "== 3. CPU tables (overhead.py, this host)"
timeout 150 python3 benchmarks/overhead.py --ops 4000 --repeats 9 --llama-repeats 5 --json "$OUT/overhead.json" 2>&1 \
    | grep -v 'USDT\|profiler_st' | tee "$OUT/overhead.txt"
echo "== 4. tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tee "$OUT/pytest.log" | tail -8
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_native_recorder.py tests/test_dispatch_dynamo_switch.py 2>&1 | tee "$OUT/pytest_native.log" | tail -4
echo "== 5. copyhunt trace on the demo"
timeout 120 python3 -m copyhunt trace copyhunt_moe.demo:baseline -o "$OUT/demo-baseline.json" --force > "$OUT/demo-baseline.txt" 2>&1
echo "rc=$?"; tail -25 "$OUT/demo-baseline.txt"
