#!/usr/bin/env bash
# The bits-per-weight budget tables of issue 24 on the 2-core box: allocated rows (one
# measurement per model, reused by every budget and objective), every uniform candidate that
# fits, and the llama.cpp-style heuristic mix, each evaluated on the first 40 valid windows
# (perplexity, KLD and same top-1 against the FP model). 128 x 512 calibration windows, seed 0,
# 2 threads, one run at a time. Rows land in $OUT/<model>/*.row.json.
#   bench/budget_tables.sh [BIN] [MODELS...]      (default: lab-m; lab-s is the quick check)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/cpu/lrquant}
shift || true
MODELS=${*:-lab-m}
OUT=${OUT:-out/budget}
S=${LRQ_SHARED:-../shared}
for m in $MODELS; do
  python3 bench/budget_tables.py --bin "$BIN" --model "$S/models/$m" --shared "$S" \
    --out "$OUT/$m" --budgets 2.25 2.5 3.0 3.5 --objectives ${OBJECTIVES:-power block-kl} \
    --threads 2 --max-windows 40
done
