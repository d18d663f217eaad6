#!/usr/bin/env bash
# The GPU test command, for a machine with an NVIDIA GPU and CUDA: configure the `cuda` preset,
# build, run the tests labelled gpu, then (unless --no-bench) the CUDA seam benchmark, and print
# a short summary last. Logs go to $OUT (or build/cuda/gpu_test). Exit status: the tests'.
#   scripts/gpu_test.sh [--no-bench] [-jN]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_common.sh
gpu_args gpu_test.sh "$@"
logs=${OUT:-build/cuda/gpu_test}
mkdir -p "$logs"
gpu_machine
cuda_build "$jobs"

echo "== ctest -L gpu"
ctest --preset gpu -V >"$logs/ctest.log" 2>&1
rc=$?
grep -E "tests passed|tests failed|\*\*\*Failed|Failed  |Total Test time" "$logs/ctest.log"

if [ "$bench" = 1 ] && [ -x build/cuda/bench/bench_cuda_seam ]; then
  echo "== bench_cuda_seam"
  ./build/cuda/bench/bench_cuda_seam >"$logs/bench.md" 2>&1 || echo "bench failed (see $logs/bench.md)"
  cat "$logs/bench.md"
fi

budget_table 25 "$logs/ctest.log"
echo "budget lines: $(grep -h "\[budget\]" "$logs/ctest.log" | sort -u | wc -l)"
echo "== ctest exit status $rc"
exit $rc
