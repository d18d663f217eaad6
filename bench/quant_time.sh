#!/usr/bin/env bash
# Quantization time of methods on one machine, one after another (nothing else should run):
# total wall time and the methods' own share (sum of the per-layer seconds in the report).
#   bench/quant_time.sh MODEL RECIPE...   (calibration: 128 x 512 tokens of lab-corpus calib)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; shift
BIN=${BIN:-build/release/lrquant}
CALIB=${CALIB:-${LRQ_SHARED:-../shared}/data/lab-corpus/calib.txt}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "| recipe | wall s | method s (sum over layers) | threads |"
echo "|---|---:|---:|---:|"
for r in "$@"; do
  t0=$(date +%s.%N)
  "$BIN" --threads "$(nproc)" quantize --model "$MODEL" --calib "$CALIB" --recipe "$r" \
    --out "$tmp/q" --force --quiet --report "$tmp/r.json" >/dev/null
  t1=$(date +%s.%N)
  m=$(python3 -c "import json;print(round(sum(l['seconds'] for l in json.load(open('$tmp/r.json'))['layers']),1))")
  echo "| \`$r\` | $(python3 -c "print(round($t1-$t0,1))") | $m | $(nproc) |"
done
