#!/usr/bin/env bash
# One device call that checks the whole GPU side and times the 7B-shape quantizers: build the
# cuda preset, every test labelled gpu (4 at a time, threads pinned: CPU references run beside
# them), then bench_quant_synth at LLaMA-2-7B shapes for the uniform recipes and, with BUDGET,
# one `quantize --budget` row (issue 24's cost against one uniform GPTQ run). Each stage has its
# own time limit so a cut keeps what finished; logs go to $OUT.
#   [BUDGET=2.5] [LAYERS=4] [RECIPES='gptq:w3g128;lords:b3'] [SYNTH_S=240] [TESTS=1]
#   bench/device_check_call.sh
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${OUT:-build/cuda/check_call}
mkdir -p "$logs"
. scripts/gpu_common.sh
export LRQ_SHARED=$(scripts/gpu_shared_from_carry.sh)
gpu_machine
cuda_build -j16
rc=0
if [ "${TESTS:-1}" = 1 ]; then
  echo "== ctest -L gpu"
  t0=$(date +%s)
  OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 timeout "${TEST_S:-240}" ctest --preset gpu -j4 \
    --output-on-failure >"$logs/ctest.log" 2>&1 || rc=1
  grep -E "tests passed|tests failed|\*\*\*Failed|\(Failed\)|\(Timeout\)" "$logs/ctest.log"
  echo "ctest: $(( $(date +%s) - t0 )) s"
fi
echo "== synth"
budget=()
[ -n "${BUDGET:-}" ] && budget=(--budget "$BUDGET")
timeout "${SYNTH_S:-240}" ./build/cuda/bench/bench_quant_synth --layers "${LAYERS:-4}" \
  --windows 128 --seqlen 2048 --recipes "${RECIPES:-gptq:w3g128;lords:b3}" "${budget[@]}" \
  >"$logs/synth.md" 2>"$logs/synth.err"
echo "synth: rc $?"
cat "$logs/synth.md"
tail -n 5 "$logs/synth.err"
exit $rc
