#!/usr/bin/env bash
# Activation quantization tables (issue 20, part 3): each recipe quantized with NSAMPLES x SEQLEN
# calibration windows of lab-corpus/calib.txt (seed 0), then scored nonoverlap-512 on
# lab-corpus/valid.txt (the first MAXW windows; 0 = all) with perplexity, KL divergence and
# same-top-token rate against the full-precision model. The activation settings travel in the
# quantized folder, so eval runs them with no flag.
#   THREADS=1 bench/act_tables.sh [BIN] [MODEL] [RECIPES...]
# Defaults: the W4A8KV8 rows; for lab-mx's W8A8 rows pass
#   'rtn:w8,a8=tensor' 'rtn:w8,a8=tensor,smooth=0.5' 'lrq:w8,a8=tensor,smooth=0.5,steps=100'
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/cpu/lrquant}
MODEL=${2:-models/lab-s}
shift 2 || true
S=${LRQ_SHARED:-../shared}
R=("$@")
((${#R[@]})) || R=("rtn:w4,a8,kv8" "gptq:w4,a8,kv8" "lrq:w4,a8,kv8,steps=100")
q=$(mktemp -d)
trap 'rm -rf "$q"' EXIT
echo "model $MODEL, $("$BIN" --version 2>/dev/null || echo lrquant), threads ${THREADS:-2}," \
  "calibration ${NSAMPLES:-32} x ${SEQLEN:-256}, eval windows ${MAXW:-0} (0 = all)"
printf '| recipe | valid PPL | KLD | same top-1 | quantize s |\n|---|---:|---:|---:|---:|\n'
for r in "${R[@]}"; do
  t0=$(date +%s.%N)
  if [[ $r == fp ]]; then
    m=$MODEL
  else
    "$BIN" --threads "${THREADS:-2}" quantize --model "$MODEL" --calib "$S/data/lab-corpus/calib.txt" \
      --nsamples "${NSAMPLES:-32}" --seqlen "${SEQLEN:-256}" --recipe "$r" --out "$q/m" --force \
      --quiet >/dev/null
    m=$q/m
  fi
  t1=$(date +%s.%N)
  "$BIN" --threads "${THREADS:-2}" eval --model "$m" --text "$S/data/lab-corpus/valid.txt" \
    --ctx 512 --max-windows "${MAXW:-0}" --reference "$MODEL" --json --quiet |
    python3 -c "import json,sys; v=json.load(sys.stdin); print(f\"| \`$r\` | {v['ppl']:.4f} | {v['kld']:.4f} | {100*v['top1']:.2f}% | {$t1 - $t0:.0f} |\")"
done
