#!/usr/bin/env bash
# Low-rank extraction on the GPU in one call, for a machine with an NVIDIA GPU: configure and
# build the cuda preset (build/cuda), run the low-rank GPU test and the sketching part of the
# backend regression, then bench_lowrank_gpu; prints the test summary, then the benchmark table
# last. Logs go to $OUT (or build/cuda/lowrank_gpu). About 3 minutes on an H100.
#   bench/lowrank_gpu.sh [-jN] [bench_lowrank_gpu arguments...]
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=-j$(nproc)
if [[ ${1:-} == -j* ]]; then jobs=$1; shift; fi
logs=${OUT:-build/cuda/lowrank_gpu}
mkdir -p "$logs"
. scripts/gpu_common.sh
gpu_machine
cuda_build "$jobs" lowrank_gpu_test backend_gpu_test lowrank_test bench_lowrank_gpu

echo "== tests"
rc=0
run_gtest lowrank_gpu_test
run_gtest backend_gpu_test 'BackendGpu.FillGaussian*:BackendGpu.Gram*:BackendGpu.CholeskyQr*:BackendGpu.Orthonormalize*:BackendGpu.Svd*:BackendGpu.BadArguments*'
run_gtest lowrank_test   # the CPU results the GPU path must leave unchanged
budget_table 8 "$logs/lowrank_gpu_test.log" "$logs/backend_gpu_test.log"

echo "== bench_lowrank_gpu (progress: $logs/bench.err)"
if ! timeout 200 ./build/cuda/bench/bench_lowrank_gpu "$@" >"$logs/bench.md" 2>"$logs/bench.err"; then
  echo "bench_lowrank_gpu failed or timed out (rerun with --no-peers or --peer-reps 1); its progress log:"
  cat "$logs/bench.err"
  rc=1
fi
echo "== test exit status $rc"
cat "$logs/bench.md"
exit $rc
