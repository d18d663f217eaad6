#!/usr/bin/env bash
# The GPU runtime in one call, for a machine with an NVIDIA GPU: configure and build
# build/cuda (Release, sm_90), run the runtime tests (runtime_gpu_test, runtime_test) and the
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
export PATH=/usr/local/cuda/bin:$PATH

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || exit 1
nvcc --version | tail -n 1

echo "== build ($jobs)"
t0=$(date +%s)
if ! cmake -S . -B build/cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DLRQ_CUDA=ON >"$logs/configure.log" 2>&1; then
  tail -n 30 "$logs/configure.log"
  exit 1
fi
if ! cmake --build build/cuda "$jobs" --target lrquant runtime_gpu_test runtime_test \
    backend_gpu_test bench_decode_gpu >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -n 40
  exit 1
fi
echo "built in $(($(date +%s) - t0)) s; warnings: $(grep -c 'warning' "$logs/build.log")"

echo "== tests"
rc=0
for t in runtime_gpu_test runtime_test backend_gpu_test; do
  ./build/cuda/tests/$t >"$logs/$t.log" 2>&1 || rc=1
  echo "$t: $(grep -E '^\[  (PASSED|FAILED) ' "$logs/$t.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$logs/$t.log" | sort -u
done
echo "runtime budgets, closest to their limit (ratio err/budget):"
grep -h "\[budget\]" "$logs/runtime_gpu_test.log" |
  awk '{ e = $(NF-2); b = $NF; r = (b > 0) ? e / b : (e > 0 ? 1e9 : 0); printf "%.3f %s\n", r, $0 }' |
  sort -g -r | head -n 8
grep -h "^quantized lab-s" "$logs/runtime_gpu_test.log"

echo "== bench_decode_gpu"
./build/cuda/bench/bench_decode_gpu "$@" | tee "$logs/bench.md"
echo "== test exit status $rc"
exit $rc
