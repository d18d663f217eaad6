#!/usr/bin/env bash
# The quantization pipeline on the GPU in one call, for a machine with an NVIDIA GPU: build what
# it needs (cuda preset), run the GPU tests of the calibration path (quant_pipeline_gpu_test:
# CPU vs CUDA statistics and perplexity on lab-s, reads ../shared or $LRQ_SHARED; the backend
# tests (all: attention, BF16 prefill, statistics products, the elementwise kernels, the
# copy queue, the factors); GPTQ's factor and layers; the packed BF16 prefill), then
# bench_quant_synth at LLaMA-2-7B shapes (32 blocks, 128 windows x 2048 tokens, block mode,
# weights streamed from the host) for each run below while the time budget lasts. Tables last.
# Logs go to $OUT (or build/cuda/gpu_pipeline).
#   scripts/gpu_pipeline_check.sh [-jN] [--budget SECONDS (default 540)]
#       [--tests GTEST_FILTER for quant_pipeline_gpu_test (default *; "-" skips it)]
#       [--runs "NAME:FLAGS|NAME:FLAGS..." (default: bf16 for all four recipes, tf32 for gptq)]
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=-j$(nproc)
budget=540
tests='*'
runs="bf16:--bf16|tf32:--tf32 --recipes gptq:w3g128"
while [ $# -gt 0 ]; do
  case $1 in
    -j*) jobs=$1 ;;
    --budget) budget=$2; shift ;;
    --tests) tests=$2; shift ;;
    --runs) runs=$2; shift ;;
    *) echo "gpu_pipeline_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
logs=${OUT:-build/cuda/gpu_pipeline}
mkdir -p "$logs"
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
. scripts/gpu_common.sh
gpu_machine
cuda_build "$jobs" lrquant quant_pipeline_gpu_test quant_gpu_test backend_gpu_test runtime_gpu_test \
  bench_quant_synth bench_block_gpu

echo "== tests"
rc=0
[ "$tests" != "-" ] && run_gtest quant_pipeline_gpu_test "$tests" 600
run_gtest backend_gpu_test '*' 240
run_gtest quant_gpu_test 'QuantGpu.Gptq*:QuantGpu.Factor*:QuantGpu.Damping*:QuantGpu.HessianError*' 300
run_gtest runtime_gpu_test 'RuntimeGpu.Packed*' 120
grep -h -E "^\[ppl\]" "$logs"/*.log
budget_table 12 "$logs"/*.log

B=./build/cuda/bench/bench_quant_synth
IFS='|' read -r -a specs <<<"$runs"
for spec in "${specs[@]}"; do
  name=${spec%%:*} flags=${spec#*:}
  limit=$(left)
  if [ "$limit" -lt 30 ]; then echo "skipped $name: time budget spent" | tee "$logs/$name.md"; continue; fi
  echo "== bench $name ($flags), limit ${limit}s"
  # shellcheck disable=SC2086
  timeout "$limit" $B --calib-mode block $flags >"$logs/$name.md" 2>"$logs/$name.err" ||
    { echo "$name: failed or timed out (see $logs/$name.err)" >>"$logs/$name.md"; tail -n 3 "$logs/$name.err"; }
done

echo "== tables"
for spec in "${specs[@]}"; do cat "$logs/${spec%%:*}.md"; done
echo "== test exit status $rc (total $(($(date +%s) - start)) s)"
exit $rc
