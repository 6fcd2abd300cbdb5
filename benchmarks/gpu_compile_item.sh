#!/usr/bin/env bash
# Compile-time device copies (issues 10/14): the compiled Llama's aten::_local_scalar_dense memcpys get a line.
#     run(command="bash benchmarks/gpu_compile_item.sh", timeout_s=300)     # about 1-2 min on an H200
# Before the fix: 12 device copies d2h of 2 bytes with no source site ("launched outside every op").
# Checks: no copy of the compiled trace lacks a site; prints the compile-time copies and their line.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/copyhunt-compile-item}"
mkdir -p "$OUT/r"
timeout 240 python3 benchmarks/gpu_compile.py --part llama --out "$OUT/r" > "$OUT/r/llama.log" 2>&1
echo "llama rc=$?"
tail -25 "$OUT/r/llama.log"
python3 - "$OUT/r/llama-compiled.json" <<'PY'
import json, sys
from collections import Counter
d = json.load(open(sys.argv[1]))
cs = d["copies"]
nosite = [c for c in cs if c["site"] is None]
ct = [c for c in cs if c["origin"] == "device" and c["seq"] == -1]
print("copies", len(cs), "no site", len(nosite), "compile-time (device, seq -1)", len(ct))
print(Counter((c["op"], c["kind"], c["bytes"], c["site"] and f'{c["site"]["file"][-40:]}:{c["site"]["line"]}') for c in ct))
print("\n".join(n for n in d["meta"]["notes"] if "compile" in n or "outside" in n))
print("no_site", d["meta"]["device_join"]["no_site"])
assert not nosite, f"{len(nosite)} copies without a site"
print("OK: every copy has a site")
PY
