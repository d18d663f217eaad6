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
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
. scripts/gpu_common.sh
gpu_machine
cuda_build "$jobs" lrquant quant_pipeline_gpu_test quant_pipeline_test bench_quant_synth

echo "== tests"
rc=0
run_gtest quant_pipeline_gpu_test '*' 600
run_gtest quant_pipeline_test '*CalibMode*:*StatsPrimitives*' 300
grep -h -E "^\[(ppl|calib-mode)\]" "$logs/quant_pipeline_gpu_test.log" "$logs/quant_pipeline_test.log"
budget_table 12 "$logs/quant_pipeline_gpu_test.log"

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
