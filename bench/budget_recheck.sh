#!/usr/bin/env bash
# Issue 24, lab-m at 3.5 bits per weight: the one cell of the budget tables where the
# llama.cpp-style mix had the lower perplexity (40 windows) while the allocation had the lower
# KLD. Re-measures both on every valid window, and the allocation again with 16 KL windows for
# the sensitivities (default 4), same calibration as bench/budget_tables.py (128 x 512, seed 0).
#   bench/budget_recheck.sh BIN MODEL_DIR SHARED OUT [DEVICE]
set -euo pipefail
bin=$1 model=$2 shared=$3 out=$4 dev=${5:-cpu}
mkdir -p "$out"
calib=$shared/data/lab-corpus/calib.txt valid=$shared/data/lab-corpus/valid.txt
meas=bench/results/budget-lab-m-h100/alloc-2.25-layer-kl.report.json
q() {  # tag, args...
  local tag=$1
  shift
  "$bin" --threads 8 quantize --model "$model" --calib "$calib" --nsamples 128 --seqlen 512 \
    --seed 0 --out "$out/$tag" --force --quiet --report "$out/$tag.report.json" --device "$dev" "$@"
  "$bin" --threads 8 eval --model "$out/$tag" --text "$valid" --ctx 512 --json --quiet \
    --device "$dev" --reference "$model" > "$out/$tag.eval.json"
  python3 - "$tag" "$out/$tag.eval.json" "$out/$tag.report.json" <<'EOF'
import json, sys
e = json.load(open(sys.argv[2])); r = json.load(open(sys.argv[3]))
print(f"| {sys.argv[1]} | {r['total']['bpw']:.3f} | {e['ppl']:.3f} | {e['kld']:.4f} | {100 * e['top1']:.1f}% | {e.get('windows', '')} |")
EOF
}
echo "| row (lab-m, all valid windows) | bpw | valid PPL | KLD | same top-1 | windows |"
echo "|---|---:|---:|---:|---:|---:|"
q heuristic-3.5 --recipe gptq:w3g128,sym,clip \
  --layer-recipe '(self_attn\.v_proj|mlp\.down_proj)$=gptq:w4g128,sym,clip'
q alloc-3.5-layer-kl --budget 3.5 --objective layer-kl --measurements "$meas"
q alloc-3.5-layer-kl-kw16 --budget 3.5 --objective layer-kl --kl-windows 16
q alloc-3.41-layer-kl-kw16 --budget 3.4107142857142856 --objective layer-kl \
  --measurements "$out/alloc-3.5-layer-kl-kw16.report.json"
"$bin" --threads 8 eval --model "$model" --text "$valid" --ctx 512 --json --quiet --device "$dev" \
  | python3 -c "import json,sys; e=json.load(sys.stdin); print(f\"| fp | 32 | {e['ppl']:.3f} | 0 | 100% | |\")"
