#!/usr/bin/env bash
# The GPU runtime in one call, for a machine with an NVIDIA GPU: configure and build
# the cuda preset (build/cuda), run the runtime tests (runtime_gpu_test, runtime_test) and the
# backend regression (backend_gpu_test), then bench_decode_gpu; prints the test summary, then
# the benchmark tables last. Logs go to $OUT (or build/cuda/decode_gpu).
#   bench/decode_gpu.sh [-jN] [bench_decode_gpu arguments...]
# The quantized-perplexity test reads $LRQ_TEST_TEXT (or ../shared); the model part of the
# benchmark reads --model DIR (lab-m).
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=-j$(nproc)
if [[ ${1:-} == -j* ]]; then jobs=$1; shift; fi
logs=${OUT:-build/cuda/decode_gpu}
mkdir -p "$logs"
. scripts/gpu_common.sh
gpu_machine
cuda_build "$jobs" lrquant runtime_gpu_test runtime_test backend_gpu_test bench_decode_gpu

echo "== tests"
rc=0
for t in runtime_gpu_test runtime_test backend_gpu_test; do run_gtest $t; done
budget_table 8 "$logs/runtime_gpu_test.log"
grep -h "^quantized lab-s" "$logs/runtime_gpu_test.log"

echo "== bench_decode_gpu"
./build/cuda/bench/bench_decode_gpu "$@" | tee "$logs/bench.md"
echo "== test exit status $rc"
exit $rc
