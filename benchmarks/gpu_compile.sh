#!/usr/bin/env bash
# torch.compile programs under copyhunt on the GPU (issue 14), one device call:
#     run(command="bash benchmarks/gpu_compile.sh", carry=[".whl_moe"], timeout_s=600)
# (.whl_moe: the lead's pytest wheels, for the GPU-marked tests; without them those are skipped.)
# Three parts (benchmarks/gpu_compile.py): the CPU test's program, a random transformers Llama generate()
# with a static cache and a compiled forward, and the bundled MoE baseline path compiled; each checks
# the outputs are bit-identical with and without the hunt, traces compiled and --eager, and diffs them.
# Then the GPU-marked compile tests. Writes everything under $OUT/r (<part>.json, traces, logs) and packs
# it into $OUT/compile_results.tgz after every step (the device tool brings back only a few files);
# prints a short summary last.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/copyhunt-compile}"
R="$OUT/r"
mkdir -p "$R"
pack() { tar czf "$OUT/compile_results.tgz" -C "$OUT" r 2>/dev/null; }
if ! python3 -c "import pytest" 2>/dev/null && ls .whl_moe/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lead_site .whl_moe/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/lead_site"
fi
python3 -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' 2>&1 | tee "$R/env.txt"

# Time limits per part (seconds): step compiles 8 small graphs, llama 4 (prefill + decode, twice), moe 2+.
for spec in step:100 llama:200 moe:120; do
    part=${spec%%:*}; limit=${spec##*:}
    echo "== $part"
    timeout "$limit" python3 benchmarks/gpu_compile.py --part "$part" --out "$R" > "$R/$part.log" 2>&1
    echo "$part rc=$?" | tee -a "$R/rc.txt"
    pack
done

echo "== GPU-marked compile tests"
if python3 -c "import pytest" 2>/dev/null; then
    timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_capture_compiled_gpu.py 2>&1 | tee "$R/pytest_gpu.log" | tail -5
else
    echo "pytest not installed: skipped" | tee "$R/pytest_gpu.log"
fi
pack

echo "== summary"
cat "$R/rc.txt"
for part in step llama moe; do
    # The summary is the part's last lines (gpu_compile.py prints it last); a crash leaves its traceback.
    sed -n '/^== /,$p' "$R/$part.log" | head -40
    grep -q '^== ' "$R/$part.log" || tail -5 "$R/$part.log"
done
