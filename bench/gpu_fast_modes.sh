#!/usr/bin/env bash
# What the fast calibration modes cost in quality: a few recipes quantized on the GPU in the
# default mode (sites, F32), in block mode with TF32 and in block mode with BF16, evaluated on
# the GPU (valid PPL + KLD, no WikiText). Needs .carry/{lab-m,lab-mx,data} (bench/NOTES.md).
#   [MODES="f32 tf32 bf16"] bench/gpu_fast_modes.sh [JOBS [MODEL...]]   (models: folders under
#   .carry; default lab-m lab-mx)
# Prints one markdown table per model and mode; rows in $OUT/<model>-<mode>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-4}
shift || true
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(lab-m lab-mx)
export PATH=/usr/local/cuda/bin:$PATH
cmake --preset cuda -DLRQ_TESTS=OFF -DLRQ_BENCH=OFF >/dev/null
cmake --build build/cuda -j"$(nproc)" --target lrquant >/dev/null
OUTDIR=${OUT:-out/gpu_fast_modes}
mkdir -p "$OUTDIR"
RECIPES=('gptq:w3g128' 'gptq:w2g128' 'flrq:w2g128,residual=gptq' 'lopro:w2g128')
for model in "${MODELS[@]}"; do
  for mode in ${MODES:-f32 tf32 bf16}; do
    extra=()
    [ "$mode" = tf32 ] && extra=(--quant-arg=--calib-mode=block --quant-arg=--tf32)
    [ "$mode" = bf16 ] && extra=(--quant-arg=--calib-mode=block --quant-arg=--bf16)
    python3 bench/quant_table.py --bin build/cuda/lrquant --model ".carry/$model" \
      --calib .carry/data/calib.txt --valid .carry/data/valid.txt --no-wiki --kld \
      --quant-device cuda --eval-device cuda --qdir "/tmp/lrq-fast/$model-$mode" \
      --out "/tmp/lrq-fast-tables/$model-$mode" --jobs "$JOBS" --threads 4 "${extra[@]}" \
      --recipes "${RECIPES[@]}" >"/tmp/lrq-fast-$model-$mode.md" 2>&1 || true
    cp "/tmp/lrq-fast-tables/$model-$mode/table.json" "$OUTDIR/$model-$mode.json" 2>/dev/null || true
    echo "### $model, $mode"
    grep -E "^\|" "/tmp/lrq-fast-$model-$mode.md" || tail -n 5 "/tmp/lrq-fast-$model-$mode.md"
  done
done
