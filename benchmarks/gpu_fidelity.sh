#!/usr/bin/env bash
# Issue 10's device batch (capture fidelity), one call on the device machine:
#     run(command="bash benchmarks/gpu_fidelity.sh", carry=[".whl_moe"], timeout_s=420)
# 1. the GPU tests of the fidelity work and of the device join (item/bool/tolist as d2h copies on their
#    lines, torch.tensor(device=) as an h2d on its line, a copy inside aten.index on x[mask]'s line,
#    eval dropout aliasing, a tiny transformers Qwen3-MoE generate() with no copy lacking a line);
# 2. benchmarks/gpu_fidelity.py: a larger random Qwen3-MoE generate() (bf16, 16 new tokens) traced end to
#    end with device capture, grouped_mm and eager experts: copies/bytes by kind, copies WITHOUT a source
#    line (target 0), ids identical traced and untraced;
# 3. benchmarks/device_overhead.py again (the bridge now opens a range around every op).
# Writes logs and JSON under $OUT; prints a short summary last.
set -uo pipefail
OUT=${OUT:-/tmp/copyhunt-fidelity}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
if ! python3 -c "import pytest" 2>/dev/null && ls .whl_moe/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fid_site .whl_moe/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/fid_site"
fi
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())' | tee "$OUT/env.txt"

echo "== 1. GPU tests: fidelity + device join (and the CPU tests of the join on the stored H200 traces)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_fidelity_gpu.py tests/test_device_gpu.py \
    tests/test_capture_gpu.py tests/test_device_attribution.py tests/test_device_join.py tests/test_capture_fidelity.py \
    2>&1 | tee "$OUT/pytest.log" | tail -15

echo "== 2. transformers Qwen3-MoE generate() traced end to end with device capture"
timeout 240 python3 benchmarks/gpu_fidelity.py --out "$OUT" 2>&1 | tee "$OUT/fidelity.log" | tail -20
echo "fidelity rc=${PIPESTATUS[0]}"

echo "== 3. device-capture overhead (a range now wraps every op, not only copies)"
timeout 90 python3 benchmarks/device_overhead.py --json "$OUT/overhead.json" 2>&1 | tee "$OUT/overhead.log" | tail -9

echo "== summary"
tail -1 "$OUT/pytest.log"
grep -E "^(grouped_mm|eager)" "$OUT/fidelity.log"
