#!/usr/bin/env bash
# The quantization pipeline on the GPU in one call, for a machine with an NVIDIA GPU: configure
# the `cuda` preset, build what it needs, run quant_pipeline_gpu_test (CPU vs CUDA statistics
# and perplexity on lab-s; reads ../shared or $LRQ_SHARED) and the CPU calib-mode test, then
# bench_quant_synth at LLaMA-2-7B shapes: a 4-block quick run of every recipe with a GPU path,
# the TF32 and block-mode variants of it, then (while the time budget lasts) all 32 blocks for
# rtn and gptq. Tables last. Logs go to $OUT (or build/cuda/gpu_pipeline).
#   scripts/gpu_pipeline_check.sh [-jN] [--budget SECONDS (default 290)]
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=-j$(nproc)
budget=290
while [ $# -gt 0 ]; do
  case $1 in
    -j*) jobs=$1 ;;
    --budget) budget=$2; shift ;;
    *) echo "gpu_pipeline_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
logs=${OUT:-build/cuda/gpu_pipeline}
mkdir -p "$logs"
export PATH=/usr/local/cuda/bin:$PATH
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || exit 1

echo "== build ($jobs)"
if ! cmake --preset cuda >"$logs/configure.log" 2>&1; then tail -n 30 "$logs/configure.log"; exit 1; fi
if ! cmake --build --preset cuda "$jobs" --target lrquant quant_pipeline_gpu_test \
    quant_pipeline_test bench_quant_synth >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -n 40
  exit 1
fi
echo "built in $(($(date +%s) - start)) s; warnings: $(grep -c 'warning' "$logs/build.log")"

echo "== tests"
rc=0
./build/cuda/tests/quant_pipeline_gpu_test >"$logs/gpu_test.log" 2>&1 || rc=1
./build/cuda/tests/quant_pipeline_test --gtest_filter='*CalibMode*:*StatsPrimitives*' \
  >"$logs/cpu_test.log" 2>&1 || rc=1
for f in gpu_test cpu_test; do
  echo "$f: $(grep -E '^\[  (PASSED|FAILED) ' "$logs/$f.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$logs/$f.log" | sort -u
done
grep -h -E "^\[(ppl|calib-mode)\]" "$logs/gpu_test.log" "$logs/cpu_test.log"
grep -h "\[budget\]" "$logs/gpu_test.log" |
  awk '{ e = $(NF-2); b = $NF; r = (b > 0) ? e / b : (e > 0 ? 1e9 : 0); printf "%.3f %s\n", r, $0 }' |
  sort -g -r | head -n 12

B=./build/cuda/bench/bench_quant_synth
run() {  # run NAME SECONDS ARGS...: one bench run under a time limit, its table kept
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 20 ]; then echo "skipped $name: time budget spent" | tee "$logs/$name.md"; return; fi
  echo "== bench $name ($*), limit ${limit}s"
  timeout "$limit" $B "$@" >"$logs/$name.md" 2>"$logs/$name.err" ||
    { echo "$name: failed or timed out (see $logs/$name.err)" >>"$logs/$name.md"; tail -n 3 "$logs/$name.err"; }
}
run quick "$(( $(left) < 120 ? $(left) : 120 ))" --layers 4 --windows 32
run quick_tf32 "$(( $(left) < 40 ? $(left) : 40 ))" --layers 4 --windows 32 --recipes 'rtn:w3g128;gptq:w3g128' --tf32
run quick_block "$(( $(left) < 40 ? $(left) : 40 ))" --layers 4 --windows 32 --recipes 'rtn:w3g128;gptq:w3g128' --calib-mode block
run full "$(left)" --layers 32 --windows 32 --recipes 'rtn:w3g128;gptq:w3g128' --calib-mode block --tf32

echo "== tables"
for n in quick quick_tf32 quick_block full; do [ -f "$logs/$n.md" ] && cat "$logs/$n.md"; done
echo
echo "full 7B-shaped run (128 windows x 2048, ~several minutes per recipe):"
echo "  $B --recipes 'rtn:w3g128;gptq:w3g128'   [--tf32] [--calib-mode block]"
echo "== test exit status $rc (total $(($(date +%s) - start)) s)"
exit $rc
