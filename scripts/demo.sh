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
