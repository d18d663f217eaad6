#!/usr/bin/env bash
# Runs bench/quant_table.py on a bigger machine (the device host's CPUs) with the model and the
# data carried in .carry/ (see bench/NOTES.md). Usage: bench/device_table.sh NAME MODEL_DIR RECIPE...
# Rows print as "ROW {json}" lines as they finish (the device returns stdout, not big folders);
# NOWIKI=1 skips WikiText-2, KLD=1 adds the KL divergence on valid; EVAL_DEVICE=cuda evaluates
# on the GPU, QUANT_DEVICE=cuda quantizes there (needs the cuda preset: PRESET=cuda).
set -euo pipefail
NAME=$1; MODEL=$2; shift 2
PRESET=${PRESET:-cpu}
cmake --preset "$PRESET" -DLRQ_TESTS=OFF -DLRQ_BENCH=OFF >/dev/null
cmake --build "build/$PRESET" -j"$(nproc)" --target lrquant >/dev/null
OUT=${OUT:-out}/$NAME
JOBS=${JOBS:-8}; THREADS=${THREADS:-2}
python3 bench/quant_table.py --bin "build/$PRESET/lrquant" --model "$MODEL" \
  --calib .carry/data/calib.txt --valid .carry/data/valid.txt --wiki .carry/data/wiki.test.raw \
  ${NOWIKI:+--no-wiki} ${KLD:+--kld} ${EVAL_DEVICE:+--eval-device $EVAL_DEVICE} \
  ${QUANT_DEVICE:+--quant-device $QUANT_DEVICE} --qdir /tmp/lrq-q \
  --jobs "$JOBS" --threads "$THREADS" --out "$OUT" --recipes "$@"
