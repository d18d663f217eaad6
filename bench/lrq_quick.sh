#!/usr/bin/env bash
# A quick LRQ check on a small model (issue 20): RTN on LRQ's grid (steps=0), LRQ trained, and
# plain RTN at the same format, each quantized with 32 x 256 calibration windows (seed 0) and
# scored on the first 10 valid windows (perplexity and KLD against the FP model).
#   bench/lrq_quick.sh [BIN] [MODEL] [RECIPES...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/cpu/lrquant}
MODEL=${2:-models/lab-s}
shift 2 || true
S=${LRQ_SHARED:-../shared}
R=("$@")
((${#R[@]})) || R=("rtn:w3" "lrq:w3,steps=0" "lrq:w3,steps=100")
q=$(mktemp -d)
trap 'rm -rf "$q"' EXIT
printf '| recipe | valid PPL | KLD | quantize s |\n|---|---:|---:|---:|\n'
for r in "${R[@]}"; do
  t0=$(date +%s.%N)
  "$BIN" --threads "${THREADS:-2}" quantize --model "$MODEL" --calib "$S/data/lab-corpus/calib.txt" \
    --nsamples 32 --seqlen 256 --recipe "$r" --out "$q/m" --force --quiet >/dev/null
  t1=$(date +%s.%N)
  "$BIN" --threads "${THREADS:-2}" eval --model "$q/m" --text "$S/data/lab-corpus/valid.txt" \
    --ctx 512 --max-windows 10 --reference "$MODEL" --json --quiet |
    python3 -c "import json,sys; v=json.load(sys.stdin); print(f\"| \`$r\` | {v['ppl']:.4f} | {v['kld']:.4f} | {$t1 - $t0:.0f} |\")"
done
