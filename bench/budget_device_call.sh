#!/usr/bin/env bash
# Issue 24's budget table of one model on the GPU machine, resumable across device calls:
# rows and reports already in bench/results/budget-<model>-h100 (committed, so they travel with
# the checkout) are skipped; new ones are copied to $OUT/budget-<model>-h100 even when the time
# limit cuts the run. Needs the cuda build (cuda_build runs it, a no-op when it is up to date)
# and the model carried in .carry/<model> (scripts/gpu_shared_from_carry.sh).
#   [TABLE_S=420] [OBJECTIVES="layer-kl block-kl power"] bench/budget_device_call.sh MODEL
set -uo pipefail
cd "$(dirname "$0")/.."
m=$1
logs=${OUT:-build/cuda/budget_call}
mkdir -p "$logs"
. scripts/gpu_common.sh
export LRQ_SHARED=$(scripts/gpu_shared_from_carry.sh)
[ -d "$LRQ_SHARED/models/$m" ] || { echo "budget_device_call.sh: .carry/$m not carried" >&2; exit 2; }
gpu_machine
cuda_build -j16 lrquant
keep=bench/results/budget-$m-h100
work=/tmp/budget/$m
mkdir -p "$work"
[ -d "$keep" ] && cp "$keep"/*.json "$work"/ 2>/dev/null
t0=$(date +%s)
OMP_NUM_THREADS=8 timeout "${TABLE_S:-420}" python3 bench/budget_tables.py \
  --bin build/cuda/lrquant --model "$LRQ_SHARED/models/$m" --shared "$LRQ_SHARED" --out "$work" \
  --budgets 2.25 2.5 3.0 3.5 --objectives ${OBJECTIVES:-layer-kl block-kl power} --threads 8 \
  --max-windows 40 --device cuda > "$logs/budget-$m.md" 2> "$logs/budget-$m.err"
echo "budget table: rc $? in $(( $(date +%s) - t0 )) s"
# One archive: the call returns a limited number of files.
tar -C "$work" -czf "$logs/budget-$m-h100.tgz" $(cd "$work" && ls *.json log.txt 2>/dev/null)
grep -c '' "$logs/budget-$m.md" >/dev/null && tail -n 30 "$logs/budget-$m.md"
tail -n 5 "$logs/budget-$m.err"
