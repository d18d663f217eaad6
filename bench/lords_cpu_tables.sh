#!/usr/bin/env bash
# The LoRDS tables of bench/RESULTS.md measured on the 2-core box (issue 21, 2026-12-07): lab-m
# and lab-mx, 128 x 512 calibration windows (seed 0), valid perplexity + KLD + same top-1 over
# the first 40 valid windows (the GPU tables score all of valid). One row at a time, 2 threads.
# Rows land in $OUT/{lab-m,lab-mx}/row*.json; bench/results_table.py renders them.
#   bench/lords_cpu_tables.sh [BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/cpu/lrquant}
OUT=${OUT:-out/lords_cpu}
S=${LRQ_SHARED:-../shared}
run() {  # model recipes...
  local m=$1
  shift
  mkdir -p "$OUT/$m"
  python3 bench/quant_table.py --bin "$BIN" --model "$S/models/$m" --out "$OUT/$m" --kld \
    --max-windows 40 --no-wiki --jobs 1 --threads 2 --recipes "$@"
}
run lab-m 'nf:b3,block128' 'lords:b3,steps=0' 'lords:b3' 'lords:b3,objective=diag' \
  'lords:b3,objective=full' 'lords:b3,objective=full,assign=gptq' \
  'lords:b3,objective=obs,assign=gptq' 'gptq:w3g128,sym,clip' \
  'nf:b4,block128' 'lords:b4' 'lords:b4,objective=obs,assign=gptq' 'gptq:w4g128,sym,clip' \
  'nf:b2,block128' 'lords:b2' 'lords:b2,objective=obs,assign=gptq' 'gptq:w2g128,sym,clip'
run lab-mx 'nf:b3,block128' 'lords:b3' 'lords:b3,objective=diag' \
  'lords:b3,objective=obs,assign=gptq' 'gptq:w3g128' 'gptq:w3g128,sym,clip'
python3 bench/results_table.py "$OUT/lab-m"
python3 bench/results_table.py "$OUT/lab-mx"
