#!/usr/bin/env bash
# RTN, GPTQ, FLRQ, LoPRo and +lr on the GPU: configure the `cuda` preset, build only
# quant_gpu_test, backend_gpu_test, runtime_gpu_test, quant_pipeline_gpu_test and
# bench_quant_gpu, run the test (CPU vs CUDA, packing on the GPU byte for byte, budgets
# printed), the seam tests of accumulate/dot/F64 gather, the packed GEMV/QuantLinear tests and
# the lab-s pipeline (layers quantized and kept on the GPU; skipped without ../shared), then the
# benchmark, and print a short summary last. Logs go to $OUT (or build/cuda/gpu_quant). Exit
# status: the tests'.
#   scripts/gpu_quant_check.sh [--no-bench] [-jN]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_common.sh
gpu_args gpu_quant_check.sh "$@"
logs=${OUT:-build/cuda/gpu_quant}
mkdir -p "$logs"
gpu_machine
cuda_build "$jobs" quant_gpu_test backend_gpu_test runtime_gpu_test quant_pipeline_gpu_test \
  bench_quant_gpu

echo "== tests"
rc=0
t0=$(date +%s)
run_gtest quant_gpu_test '*' 300
echo "quant_gpu_test ran in $(($(date +%s) - t0)) s"
# The seam primitives the low-rank methods added.
run_gtest backend_gpu_test 'BackendGpu.AccumulateAndDotMatchCpu:BackendGpu.PermuteColsF64IsAnExactGather' 120
# Packed weights and quantized layers on the GPU; the whole pipeline with GPU-packed layers.
run_gtest runtime_gpu_test 'RuntimeGpu.PackedMatmul*:RuntimeGpu.QuantLinearMatchesCpu' 120
run_gtest quant_pipeline_gpu_test '*PipelineGpuRecipe*' 300

if [ "$bench" = 1 ]; then
  echo "== bench_quant_gpu"
  timeout 240 ./build/cuda/bench/bench_quant_gpu --reps 3 >"$logs/bench.md" 2>&1 ||
    echo "bench failed (see $logs/bench.md)"
fi

budget_table 40 "$logs/quant_gpu_test.log" "$logs/backend_gpu_test.log" \
  "$logs/runtime_gpu_test.log" "$logs/quant_pipeline_gpu_test.log"
grep -h "^\[ppl\]" "$logs/quant_pipeline_gpu_test.log"
grep -E "rank cpu" "$logs/quant_gpu_test.log" | sort -u
[ "$bench" = 1 ] && cat "$logs/bench.md"
echo "== tests exit status $rc"
exit $rc
