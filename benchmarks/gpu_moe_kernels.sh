#!/usr/bin/env bash
# One device call for the Triton MoE experts (issue 3): precompile -> GPU tests -> tune + benchmark.
# Run from the repository root on a CUDA machine:
#     OUT=/tmp/moe bash benchmarks/gpu_moe_kernels.sh [BENCH_BUDGET_S]
# Everything lands in $OUT: nvidia-smi.txt, pytest_gpu.txt, moe_kernels.{log,json}, the tuned
# config table E256_N384_K3072.json (copy it to copyhunt_moe/configs/ to check it in).
set -uo pipefail
OUT=${OUT:-/tmp/moe_kernels_out}
BENCH_BUDGET_S=${1:-240}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit \
    --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"

# The device image may lack pytest: install the carried wheels (.whl_moe) into /tmp only if so.
if ! $PY -c "import pytest" 2>/dev/null && ls .whl_moe/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/moe_site .whl_moe/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/moe_site"
fi

# 1. Fill Triton's disk cache with every candidate, in parallel processes (compiling is serial per process).
$PY benchmarks/moe_kernels.py --out "$OUT" --precompile-only --workers 10 || echo "PRECOMPILE FAILED rc=$?"

# 2. GPU tests (bf16 vs reference for every preset, graph replay == eager, no host sync).
$PY -m pytest -q -p no:cacheprovider tests/test_moe_triton_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -25

# 3. Ceilings, correctness tables, per-M tuning, CUDA-graph timings; the short table prints last.
$PY benchmarks/moe_kernels.py --out "$OUT" --no-precompile --budget-s "$BENCH_BUDGET_S"
