#!/usr/bin/env bash
# Issue 17, GPU part: where hunt(device_trace=True)'s own time goes, this tree against BASE (a copy of
# main's package), issue 17's table, then the GPU device tests. One device call, from a helper's copy:
#     run(command="cd .devcost_xfer/new && BASE=../base WHL=../../.whl_moe FULL=1 bash benchmarks/gpu_devcost.sh",
#         carry=[".whl_moe", ".devcost_xfer"], timeout_s=240)
set -uo pipefail
OUT=${OUT:-/tmp/copyhunt-devcost}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 COPYHUNT_CACHE_DIR="$OUT/cache"
WHL=${WHL:-.whl_moe}
EXTRA=""
if ! python3 -c "import pytest" 2>/dev/null && ls "$WHL"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lead_site "$WHL"/*.whl && EXTRA=":/tmp/lead_site"
fi
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
filt() { grep -v '^STAGE:\|USDT\|profiler_st'; }
left() { echo $(( ${BUDGET:-225} - SECONDS )); }
for tree in ${BASE:-} .; do
    [ -d "$tree/copyhunt" ] || continue
    root=$(cd "$tree" && pwd)
    echo "== tree $tree: compiled recorder ($SECONDS s)"
    PYTHONPATH="$root" timeout 60 python3 -c 'from copyhunt.capture import native_recorder as n; print("native:", n.load() is not None, n.unavailable_reason())' 2>&1 | tail -1
    for w in moe qwen3moe; do
        echo "== tree $tree: breakdown $w ($SECONDS s)"
        reps=7; [ $w = qwen3moe ] && reps=3
        PYTHONPATH="$root" timeout 45 python3 benchmarks/device_cost.py --workload $w --reps $reps \
            $([ "$tree" = . ] && [ $w = moe ] && echo --cprofile) 2>&1 | filt
    done
done
if [ -n "${FULL:-}" ] && [ "$(left)" -gt 110 ]; then
    echo "== device_overhead.py --reps 5 ($SECONDS s)"
    PYTHONPATH="$PWD" timeout 75 python3 benchmarks/device_overhead.py --reps 5 2>&1 | filt
fi
echo "== GPU device tests ($SECONDS s, $(left) s left)"
PYTHONPATH="$PWD$EXTRA" timeout "$(left)" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_device_gpu.py tests/test_capture_gpu.py \
    tests/test_compiled_device_join.py tests/test_perfetto_device.py 2>&1 | tail -5
PYTHONPATH="$PWD$EXTRA" timeout 20 python3 -m pytest -q -p no:cacheprovider tests/test_device_fixtures.py 2>&1 | tail -1
echo "done ($SECONDS s)"
