#!/usr/bin/env bash
# The lead's device batch: every GPU-marked test in the suite, then `copyhunt trace` on both MoE demo
# paths with device capture (the default on a GPU). One device call:
#     run(command="bash benchmarks/gpu_lead.sh", carry=[".whl_moe"])
# Writes logs and traces under $OUT; prints a short summary last.
set -uo pipefail
OUT=${OUT:-/tmp/copyhunt-lead}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import pytest" 2>/dev/null && ls .whl_moe/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lead_site .whl_moe/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/lead_site"
fi
python3 -c 'import torch, triton, typer; print("torch", torch.__version__, "triton", triton.__version__, "typer", typer.__version__, torch.cuda.get_device_name())' | tee "$OUT/env.txt"

echo "== GPU tests (every @pytest.mark.gpu test)"
timeout 420 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tee "$OUT/pytest_gpu.log" | tail -15

echo "== copyhunt trace on the GPU: baseline and fixed demo (device capture on by default)"
for mode in baseline fixed; do
    timeout 120 python3 -m copyhunt trace "copyhunt_moe.demo:$mode" -o "$OUT/demo-$mode.json" --force > "$OUT/demo-$mode.txt" 2>&1
    echo "$mode rc=$?"; cat "$OUT/demo-$mode.txt"
done
