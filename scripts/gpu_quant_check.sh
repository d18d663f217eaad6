#!/usr/bin/env bash
# RTN, GPTQ, FLRQ, LoPRo and +lr on the GPU: configure the `cuda` preset, build only
# quant_gpu_test, backend_gpu_test and bench_quant_gpu, run the test (CPU vs CUDA, budgets
# printed), the seam tests of accumulate/dot/F64 gather, and the benchmark, and print a short
# summary last. Logs go to $OUT (or build/cuda/gpu_quant). Exit status: the tests'.
#   scripts/gpu_quant_check.sh [--no-bench] [-jN]
set -uo pipefail
cd "$(dirname "$0")/.."
bench=1
jobs=-j$(nproc)
for a in "$@"; do
  case $a in
    --no-bench) bench=0 ;;
    -j*) jobs=$a ;;
    *) echo "gpu_quant_check.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
logs=${OUT:-build/cuda/gpu_quant}
mkdir -p "$logs"
export PATH=/usr/local/cuda/bin:$PATH

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || exit 1

echo "== configure (preset cuda)"
if ! cmake --preset cuda >"$logs/configure.log" 2>&1; then
  tail -n 30 "$logs/configure.log"
  exit 1
fi

echo "== build quant_gpu_test backend_gpu_test bench_quant_gpu ($jobs)"
t0=$(date +%s)
if ! cmake --build --preset cuda "$jobs" --target quant_gpu_test backend_gpu_test bench_quant_gpu \
    >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -n 40
  exit 1
fi
echo "built in $(($(date +%s) - t0)) s; warnings: $(grep -c 'warning' "$logs/build.log")"

echo "== quant_gpu_test"
t0=$(date +%s)
timeout 300 ./build/cuda/tests/quant_gpu_test >"$logs/test.log" 2>&1
rc=$?
grep -E "^\[  (PASSED|FAILED) |^\[ +(OK|FAILED) +\]" "$logs/test.log"
grep -B2 -A6 "Failure" "$logs/test.log" | head -n 60
echo "test ran in $(($(date +%s) - t0)) s (exit $rc)"

echo "== backend_gpu_test (the seam primitives the low-rank methods added)"
timeout 120 ./build/cuda/tests/backend_gpu_test \
  --gtest_filter='BackendGpu.AccumulateAndDotMatchCpu:BackendGpu.PermuteColsF64IsAnExactGather' \
  >"$logs/backend.log" 2>&1
brc=$?
grep -E "^\[ +(OK|FAILED) +\]" "$logs/backend.log"
grep -B2 -A6 "Failure" "$logs/backend.log" | head -n 30
[ $rc -eq 0 ] && rc=$brc

if [ "$bench" = 1 ]; then
  echo "== bench_quant_gpu"
  timeout 240 ./build/cuda/bench/bench_quant_gpu --reps 3 >"$logs/bench.md" 2>&1 ||
    echo "bench failed (see $logs/bench.md)"
fi

echo "== error budgets (ratio = err / budget; * = over)"
grep -h "^\[budget\]" "$logs/test.log" "$logs/backend.log" | sort -u |
  awk '{ e = $(NF-2); b = $NF; name = $0; sub(/^\[budget\] /, "", name); sub(/ +err .*$/, "", name);
         bad = (e !~ /^[0-9]/) || (e + 0 > b + 0); r = bad ? 1e99 : (b > 0 ? e / b : (e > 0 ? 1e99 : 0));
         printf "%.3e %s %-52s err %-10s budget %s\n", r, bad ? "*" : " ", name, e, b }' |
  sort -g -r | head -n 40 | cut -d" " -f2-
grep -E "rank cpu" "$logs/test.log" | sort -u
[ "$bench" = 1 ] && cat "$logs/bench.md"
echo "== quant_gpu_test exit status $rc"
exit $rc
