#!/usr/bin/env bash
# Device batch for issue 4 (device capture, graph replays, bench moe), one call on the device machine:
#   run(command="bash benchmarks/gpu_device.sh", timeout_s=...)
# Writes everything under $OUT/r and packs it into $OUT/device_results.tgz (the run tool brings
# back at most 8 files). Prints a short summary last.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/copyhunt-device}"
R="$OUT/r"
mkdir -p "$R/traces"
# Pack after every step: if the call runs past its limit, what was packed still comes back.
pack() { tar czf "$OUT/device_results.tgz" -C "$OUT" r 2>/dev/null; }
python3 -c 'import torch, triton, typer, rich; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "typer", typer.__version__, torch.cuda.get_device_name())' 2>&1 | tee "$R/env.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv >> "$R/env.txt" 2>&1

echo "== 1. GPU tests (device capture, graph replays, MoE demo) + the CPU fixture tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_device_gpu.py tests/test_device_join.py \
    tests/test_import_chrome.py tests/test_perfetto_device.py 2>&1 | tee "$R/pytest.log" | tail -25
pack

echo "== 2. real fixtures: MoE baseline/fixed and a 2-copy graph replayed 3 times, with device capture"
timeout 90 python3 traces/capture_moe_traces.py "$R/traces" 2>&1 | tee "$R/capture.log" | tail -8
pack

echo "== 3. device-capture overhead vs torch.profiler(with_stack=True)"
timeout 90 python3 benchmarks/device_overhead.py --json "$R/overhead.json" 2>&1 | tee "$R/overhead.log" | tail -9
pack

echo "== 4. copyhunt bench moe (graph + eager, default token counts, 4 layers)"
timeout "${BENCH_TIMEOUT:-200}" python3 -m copyhunt bench moe --layers 4 --mode both --json > "$R/bench_moe.json" 2> "$R/bench_moe.err"
echo "bench rc=$?"; tail -3 "$R/bench_moe.err"
python3 - "$R/bench_moe.json" <<'PY' 2>&1 | tee "$R/bench_moe.txt"
import json, sys
from rich.console import Console
from copyhunt.bench.moe import BenchConfig, BenchResult, BenchRow
d = json.load(open(sys.argv[1]))
cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in d["config"].items()}
r = BenchResult(config=BenchConfig(**cfg), device=d["device"], backend=d["backend"], smoke=d["smoke"], notes=d["notes"],
                copies_per_layer=d["copies_per_layer"],
                rows=[BenchRow(**{k: v for k, v in row.items() if k != "fixed_not_slower"}) for row in d["rows"]])
from copyhunt.bench.table import render_bench
render_bench(r, Console(width=110, no_color=True, force_terminal=False))
PY
pack
echo "== 5. the CLI end to end on the GPU: copyhunt trace (MoE demo, device capture on by default) + report"
( cd "$R" && timeout 60 python3 -m copyhunt trace -o cli-demo.json --top 10 > cli_trace.txt 2>&1; echo "trace rc=$?" >> cli_trace.txt
  COLUMNS=80 timeout 30 python3 -m copyhunt report cli-demo.json > cli_report.txt 2>&1; echo "report rc=$?" >> cli_report.txt )
tail -20 "$R/cli_trace.txt"
tar czf "$OUT/device_results.tgz" -C "$OUT" r
ls -la "$OUT"
