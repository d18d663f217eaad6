#!/usr/bin/env bash
# The GPU test command, for a machine with an NVIDIA GPU and CUDA: configure the `cuda` preset,
# build, run the tests labelled gpu, then (unless --no-bench) the CUDA seam benchmark, and print
# a short summary last. Logs go to $OUT (or build/cuda/gpu_test). Exit status: the tests'.
#   scripts/gpu_test.sh [--no-bench] [-jN]
set -uo pipefail
cd "$(dirname "$0")/.."
bench=1
jobs=-j$(nproc)
for a in "$@"; do
  case $a in
    --no-bench) bench=0 ;;
    -j*) jobs=$a ;;
    *) echo "gpu_test.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
logs=${OUT:-build/cuda/gpu_test}
mkdir -p "$logs"
export PATH=/usr/local/cuda/bin:$PATH

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || exit 1
nvcc --version | tail -n 1
cmake --version | head -n 1

echo "== configure (preset cuda)"
if ! cmake --preset cuda >"$logs/configure.log" 2>&1; then
  tail -n 30 "$logs/configure.log"
  exit 1
fi
grep -E "OpenBLAS:|CUDA backend:|Found (GTest|nlohmann_json|fmt|benchmark|CUDAToolkit)" "$logs/configure.log"

echo "== build ($jobs)"
t0=$(date +%s)
if ! cmake --build --preset cuda "$jobs" >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -n 40
  exit 1
fi
echo "built in $(($(date +%s) - t0)) s; warnings: $(grep -c 'warning' "$logs/build.log")"

echo "== ctest -L gpu"
ctest --preset gpu -V >"$logs/ctest.log" 2>&1
rc=$?
grep -E "tests passed|tests failed|\*\*\*Failed|Failed  |Total Test time" "$logs/ctest.log"

if [ "$bench" = 1 ] && [ -x build/cuda/bench/bench_cuda_seam ]; then
  echo "== bench_cuda_seam"
  ./build/cuda/bench/bench_cuda_seam >"$logs/bench.md" 2>&1 || echo "bench failed (see $logs/bench.md)"
  cat "$logs/bench.md"
fi

echo "== error budgets: the 25 closest to their budget (ratio = err / budget; * = over)"
grep -h "\[budget\]" "$logs/ctest.log" | sed 's/^[0-9]*: //' | sort -u |
  awk '{ e = $(NF-2); b = $NF; name = $0; sub(/^\[budget\] /, "", name); sub(/ +err .*$/, "", name);
         bad = (e !~ /^[0-9]/) || (e + 0 > b + 0); r = bad ? 1e99 : (b > 0 ? e / b : 0);
         printf "%.3e %s %-50s err %-10s budget %s\n", r, bad ? "*" : " ", name, e, b }' |
  sort -g -r | head -n 25 | cut -d" " -f2-
echo "budget lines: $(grep -h "\[budget\]" "$logs/ctest.log" | sort -u | wc -l)"
echo "== ctest exit status $rc"
exit $rc
