#!/usr/bin/env bash
# LoRDS on the GPU in one device call (issue 21): build the cuda preset, run the LoRDS GPU tests
# and the packed-runtime regression (the kernels share the code-layout readers), the kernel
# benchmark (bench_lords_gpu), then the time to quantize a LLaMA-2-7B-shaped model with lords
# (bench_quant_synth, 4 blocks of 32 measured and scaled by the caller). Tables print last.
#   bench/lords_gpu.sh [-jN] [--no-synth]
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=-j$(nproc)
synth=1
for a in "$@"; do
  case $a in
    -j*) jobs=$a ;;
    --no-synth) synth=0 ;;
    *) echo "lords_gpu.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
logs=${OUT:-build/cuda/lords_gpu}
mkdir -p "$logs"
. scripts/gpu_common.sh
gpu_machine
cuda_build "$jobs" lrquant lords_gpu_test lords_quant_gpu_test lords_test runtime_gpu_test \
  bench_lords_gpu bench_quant_synth
echo "== tests"
rc=0
for t in lords_gpu_test lords_quant_gpu_test lords_test runtime_gpu_test; do run_gtest $t; done
echo "== bench_lords_gpu"
./build/cuda/bench/bench_lords_gpu --reps 15 | tee "$logs/bench_lords.md"
if [ $synth = 1 ]; then
  echo "== bench_quant_synth (7B shapes, 4 blocks, 128 x 2048 tokens)"
  ./build/cuda/bench/bench_quant_synth --layers 4 --windows 128 --seqlen 2048 \
    --recipes 'gptq:w3g128;lords:b3;lords:b3,objective=full' | tee "$logs/synth.md"
fi
echo "== test exit status $rc"
exit $rc
