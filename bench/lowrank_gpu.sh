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
export PATH=/usr/local/cuda/bin:$PATH

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || exit 1
nvcc --version | tail -n 1

echo "== build ($jobs)"
t0=$(date +%s)
if ! cmake --preset cuda >"$logs/configure.log" 2>&1; then
  tail -n 30 "$logs/configure.log"
  exit 1
fi
if ! cmake --build --preset cuda "$jobs" --target lowrank_gpu_test backend_gpu_test \
    lowrank_test bench_lowrank_gpu >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -n 40
  exit 1
fi
echo "built in $(($(date +%s) - t0)) s; warnings: $(grep -c 'warning' "$logs/build.log")"

echo "== tests"
rc=0
run_test() {  # name [gtest filter]
  local t=$1 f=${2:-*}
  ./build/cuda/tests/$t --gtest_filter="$f" >"$logs/$t.log" 2>&1 || rc=1
  echo "$t: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$logs/$t.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$logs/$t.log" | sort -u
}
run_test lowrank_gpu_test
run_test backend_gpu_test 'BackendGpu.FillGaussian*:BackendGpu.Gram*:BackendGpu.CholeskyQr*:BackendGpu.Orthonormalize*:BackendGpu.Svd*:BackendGpu.BadArguments*'
run_test lowrank_test   # the CPU results the GPU path must leave unchanged
echo "budgets, closest to their limit (ratio err/budget):"
grep -h "\[budget\]" "$logs/lowrank_gpu_test.log" "$logs/backend_gpu_test.log" |
  awk '{ e = $(NF-2); b = $NF; r = (b > 0) ? e / b : (e > 0 ? 1e9 : 0); printf "%.3f %s\n", r, $0 }' |
  sort -g -r | head -n 8

echo "== bench_lowrank_gpu (progress: $logs/bench.err)"
if ! timeout 200 ./build/cuda/bench/bench_lowrank_gpu "$@" >"$logs/bench.md" 2>"$logs/bench.err"; then
  echo "bench_lowrank_gpu failed or timed out (rerun with --no-peers or --peer-reps 1); its progress log:"
  cat "$logs/bench.err"
  rc=1
fi
echo "== test exit status $rc"
cat "$logs/bench.md"
exit $rc
