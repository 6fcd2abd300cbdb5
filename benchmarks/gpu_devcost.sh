#!/usr/bin/env bash
# Issue 17, GPU part: where hunt(device_trace=True)'s own time goes, this branch against main (an
# untracked copy of main's package under _base/), then the GPU device tests. One device call:
#     run(command="bash benchmarks/gpu_devcost.sh", carry=[".whl_moe"], timeout_s=240)
# FULL=1 also runs benchmarks/device_overhead.py --reps 5 (issue 17's table).
set -uo pipefail
OUT=${OUT:-/tmp/copyhunt-devcost}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 COPYHUNT_CACHE_DIR="$OUT/cache"
EXTRA=""
if ! python3 -c "import pytest" 2>/dev/null && ls .whl_moe/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lead_site .whl_moe/*.whl && EXTRA=":/tmp/lead_site"
fi
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
filt() { grep -v '^STAGE:\|USDT\|profiler_st'; }
for tree in ${TREES:-_base .}; do
    [ -d "$tree/copyhunt" ] || continue
    echo "== tree $tree: compiled recorder"
    PYTHONPATH="$PWD/$tree" timeout 90 python3 -c 'from copyhunt.capture import native_recorder as n; print("native:", n.load() is not None, n.unavailable_reason())' 2>&1 | tail -1
    for w in moe qwen3moe; do
        echo "== tree $tree: breakdown $w"
        reps=7; [ $w = qwen3moe ] && reps=3
        PYTHONPATH="$PWD/$tree" timeout 75 python3 benchmarks/device_cost.py --workload $w --reps $reps \
            $([ "$tree" = . ] && [ $w = moe ] && echo --cprofile) 2>&1 | filt | tee "$OUT/cost_${tree//[\/.]/}_$w.txt"
    done
done
if [ -n "${FULL:-}" ]; then
    echo "== device_overhead.py --reps 5"
    PYTHONPATH="$PWD" timeout 120 python3 benchmarks/device_overhead.py --reps 5 --json "$OUT/device_overhead.json" 2>&1 | filt | tee "$OUT/device_overhead.txt"
fi
echo "== GPU device tests"
PYTHONPATH="$PWD$EXTRA" timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_device_gpu.py tests/test_capture_gpu.py \
    tests/test_compiled_device_join.py 2>&1 | tee "$OUT/pytest.log" | tail -4
PYTHONPATH="$PWD$EXTRA" timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_kineto_export_fast.py tests/test_device_fixtures.py 2>&1 | tail -2
