#!/usr/bin/env bash
# The fused (flash) attention prefill on the device: build backend_gpu_test and bench_block_gpu
# in the cuda preset, run the attention tests (the F32 paths, the cuBLAS TF32 fallback and the
# fused BF16 kernel against the CPU), print their error budgets, then the 7B block primitives
# (attention rows: F32 column = cuBLAS F32, TF32 = cuBLAS TF32, BF16 = the fused kernel).
# Meant to take under 3 minutes on the H100 machine. Logs in $OUT (or build/cuda/flash_check).
# Exit status: the tests'.
#   scripts/gpu_flash_check.sh [--no-bench] [-jN]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_common.sh
gpu_args gpu_flash_check.sh "$@"
logs=${OUT:-build/cuda/flash_check}
mkdir -p "$logs"
rc=0
gpu_machine
cuda_build "$jobs" backend_gpu_test bench_block_gpu

echo "== backend_gpu_test BackendGpu.Attention*"
run_gtest backend_gpu_test 'BackendGpu.Attention*'

if [ "$bench" = 1 ]; then
  echo "== bench_block_gpu"
  timeout 120 ./build/cuda/bench/bench_block_gpu --reps 9 >"$logs/bench_block_gpu.md" 2>&1 ||
    echo "bench_block_gpu failed (see $logs/bench_block_gpu.md)"
  cat "$logs/bench_block_gpu.md"
fi

budget_table 20 "$logs"/backend_gpu_test.log
echo "== exit status $rc"
exit $rc
