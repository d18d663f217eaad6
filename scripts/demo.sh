#!/usr/bin/env bash
# The main job on the embedded default model (models/lab-s): build, inspect, measure perplexity,
# quantize with two recipes, measure again, generate. Needs ../shared (or $LRQ_SHARED) for the
# calibration and evaluation text.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${LRQ_SHARED:-../shared}
if [[ ! -f $SHARED/data/lab-corpus/valid.txt ]]; then
  echo "demo: $SHARED/data/lab-corpus not found; put the shared data beside the repo or set LRQ_SHARED" >&2
  exit 1
fi
./scripts/build.sh release
BIN=build/release/lrquant
MODEL=models/lab-s
TEXT=$SHARED/data/lab-corpus/valid.txt
CALIB=$SHARED/data/lab-corpus/calib.txt
OUT=${DEMO_OUT:-out/demo}
mkdir -p "$OUT"

$BIN inspect --model $MODEL
echo; echo "== perplexity of the original model (nonoverlap-512 on lab-corpus/valid.txt)"
$BIN eval --model $MODEL --text "$TEXT" --ctx 512

# Quantize with two recipes, then measure each (KL divergence against the original model too).
for RECIPE in "gptq:w4g128,act_order" "flrq:w3g128,residual=gptq"; do
  DIR=$OUT/$(echo "$RECIPE" | tr ':,=' '___')
  echo; echo "== quantize: $RECIPE"
  $BIN quantize --model $MODEL --calib "$CALIB" --nsamples 64 --seqlen 512 --recipe "$RECIPE" \
       --out "$DIR" --force --report "$DIR.report.json" | tail -n 2
  $BIN eval --model "$DIR" --text "$TEXT" --ctx 512 --reference $MODEL --quiet
done
echo; echo "== generate (quantized: gptq:w4g128,act_order)"
$BIN generate --model "$OUT/gptq_w4g128_act_order" --prompt "Once upon a time" --max-tokens 40
