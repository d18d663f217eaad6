#!/usr/bin/env bash
# The whole LoRDS device session in one call, for a tight device budget (issue 21): build, the
# kernel tests, the LoRDS table of the carried model (quant_table.py, GPU quantize + eval), the
# kernel benchmark, then 7B-shape quantize timing. Each stage has its own time limit so a cut
# keeps what finished; results go to $OUT and the tables print last.
#   [ROWS=min] [TABLE_S=330] [REPS=7] [SYNTH=0] [SYNTH_S=150] bench/lords_device_call.sh MODEL_DIR [JOBS]
# MODEL_DIR "-" skips the table (kernels, tests and the 7B timing only; nothing to carry).
set -uo pipefail
cd "$(dirname "$0")/.."
model=$1; njobs=${2:-8}
logs=${OUT:-build/cuda/lords_call}
mkdir -p "$logs"
. scripts/gpu_common.sh
export LRQ_SHARED=$(scripts/gpu_shared_from_carry.sh)
gpu_machine
cuda_build -j16 lrquant lords_gpu_test grad_gpu_test bench_lords_gpu bench_quant_synth
rc=0
run_gtest lords_gpu_test '*' 90
run_gtest grad_gpu_test '*' 60  # the block's backward ops (issue 20), first run on a GPU
echo "== bench_lords_gpu"
timeout 100 ./build/cuda/bench/bench_lords_gpu --reps "${REPS:-7}" > "$logs/bench_lords.md" 2>&1
R=()
if [ "$model" = - ]; then
  :
elif [ "${ROWS:-all}" = min ]; then  # the rows the lab-mx acceptance needs, for a short call
  R=('nf:b3,block128' 'gptq:w3g128' 'gptq:w3g128,sym,clip' 'lords:b3' 'lords:b3,objective=diag'
     'lords:b3,objective=obs,assign=gptq' 'lords:b3,objective=full,assign=gptq' 'nf:b4,block128'
     'lords:b4,objective=obs,assign=gptq' 'nf:b2,block128' 'lords:b2,objective=obs,assign=gptq' 'fp')
else
for b in 3 4 2; do
  R+=("nf:b$b,block128" "gptq:w${b}g128,sym,clip" "gptq:w${b}g128" "lords:b$b"
      "lords:b$b,objective=diag" "lords:b$b,objective=full" "lords:b$b,objective=obs,assign=gptq")
done
R+=('lords:b3,steps=0' 'lords:b3,objective=full,assign=gptq' 'lords:b3,init=exact'
    'lords:b3,blk=256' 'lords:b3,blk=64' 'lords:b3,steps=100' 'lords:b3,steps=2000' fp)
fi
if [ ${#R[@]} -gt 0 ]; then
echo "== table ($(basename "$model"), ${#R[@]} rows, $njobs jobs)"
t0=$(date +%s)
OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 timeout "${TABLE_S:-330}" python3 bench/quant_table.py \
  --bin build/cuda/lrquant --model "$model" --shared "$LRQ_SHARED" --out "$logs/table" \
  --qdir /tmp/lords_q --kld --quant-device cuda --eval-device cuda --jobs "$njobs" --threads 2 \
  --recipes "${R[@]}" > "$logs/table.md" 2> "$logs/table.err"
echo "table: rc $? in $(( $(date +%s) - t0 )) s"
fi
echo "== synth"
# LLaMA-2-7B shapes, SYNTH_LAYERS of the 32 blocks (the table's s/block x 32 is the whole model).
[ "${SYNTH:-1}" = 1 ] && timeout "${SYNTH_S:-150}" ./build/cuda/bench/bench_quant_synth \
  --layers "${SYNTH_LAYERS:-4}" --windows 128 --seqlen 2048 \
  --recipes "${SYNTH_RECIPES:-gptq:w3g128;lords:b3;lords:b3,objective=full;lords:b3,objective=obs,assign=gptq}" \
  > "$logs/synth.md" 2>&1
cat "$logs/table.md" "$logs/bench_lords.md" "$logs/synth.md" 2>/dev/null
tail -3 "$logs/table.err" 2>/dev/null
exit $rc
