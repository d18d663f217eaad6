#!/usr/bin/env bash
# Builds and runs bench_lowrank: low-rank methods vs the exact SVD on synthetic matrices with a
# decaying spectrum. Extra arguments go to the benchmark (e.g. --sizes 2048x2048 --reps 3).
# Writes the markdown table to stdout and to $BUILD/bench_lowrank.md.
# OpenMP threads sleep instead of spinning while they wait: on a shared box a spinning thread
# steals the core its partner needs, and a 0.05 s SVD then takes seconds.
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/bench}
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLRQ_BENCH=ON >/dev/null
cmake --build "$BUILD" --target bench_lowrank -j "${JOBS:-2}"
{
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
       "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, OMP_WAIT_POLICY=$OMP_WAIT_POLICY," \
       "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  "$BUILD/bench/bench_lowrank" \
    --methods "svd;rsvd:p=8,q=2;r1:it=2;block:b=16,p=8,it=2;block:b=16,p=0,it=2;block:b=32,p=8,it=2" \
    --reps 2 "$@"
} | tee "$BUILD/bench_lowrank.md"
