#!/usr/bin/env bash
# The low-rank tables of bench/RESULTS.md (issues 4 and 5), quantized and evaluated on the GPU:
# for lab-m and lab-mx, every recipe below through bench/quant_table.py with
# `quantize --device cuda` and `eval --device cuda` (valid with KLD against the model, and
# WikiText-2). Needs the models and data in .carry/ (see bench/NOTES.md) and the cuda preset.
#   bench/gpu_tables.sh [m|mx|both] [JOBS]
# SET=lords runs the LoRDS table (issue 21) instead of the low-rank one.
# MATCH=REGEX keeps only the recipes matching it (and drops the fp row), e.g. MATCH='^(flrq|lopro)'
# for the rows a change of the low-rank methods' seeds moves.
# Writes $OUT/<model>.json (all rows) and prints the markdown table of each model last.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-both}; JOBS=${2:-4}
export PATH=/usr/local/cuda/bin:$PATH
cmake --preset cuda -DLRQ_TESTS=OFF -DLRQ_BENCH=OFF >/dev/null
cmake --build build/cuda -j"$(nproc)" --target lrquant >/dev/null
OUTDIR=${OUT:-out/gpu_tables}
mkdir -p "$OUTDIR"
if [ "${SET:-lowrank}" = lords ]; then
# LoRDS (issue 21): at 4/3/2 bits against NF with block-128 scales (the same scale-parameter
# count: equal bpw up to the codebook), GPTQ at that bpw (sym) and one step above (asym), and
# the wave-1 best rows; then the ablations at 3 bits (rank x0.5/x2 through blk=256/64).
RECIPES=()
for b in 4 3 2; do
  RECIPES+=("nf:b$b,block128" "gptq:w${b}g128,sym,clip" "gptq:w${b}g128" "lords:b$b,steps=0"
            "lords:b$b" "lords:b$b,objective=diag" "lords:b$b,objective=full"
            "lords:b$b,objective=full,assign=gptq")
done
RECIPES+=('lopro:w3g128,sym,clip' 'lopro:w2g128,sym,clip'
          'lords:b3,init=exact' 'lords:b3,init=exact,steps=0' 'lords:b3,blk=256' 'lords:b3,blk=64'
          'lords:b3,steps=100' 'lords:b3,steps=2000' 'lords:b3,codebook=int')
else
RECIPES=(
  # baselines on the same footing
  'gptq:w3g128' 'gptq:w2g128' 'gptq:w3g64' 'gptq:w2g64'
  'rtn:w3g128,sym,clip' 'rtn:w2g128,sym,clip' 'gptq:w3g128,sym,clip' 'gptq:w2g128,sym,clip'
  # FLRQ (faithful: RTN residual) and with a GPTQ residual
  'flrq:w3g128' 'flrq:w2g128' 'flrq:w3g128,residual=gptq' 'flrq:w2g128,residual=gptq'
  # FLRQ ablations: no activation scaling, no BLC, fixed rank, SVD instead of R1-Sketch
  'flrq:w3g128,act=0' 'flrq:w3g128,blc=off' 'flrq:w3g128,rank=8' 'flrq:w3g128,sketch=svd'
  'flrq:w2g128,residual=gptq,act=0' 'flrq:w2g128,residual=gptq,blc=off'
  'flrq:w2g128,residual=gptq,rank=8' 'flrq:w2g128,residual=gptq,sketch=svd'
  # LoRC / LQER / QERA peers (rank 16 on a GPTQ base)
  'gptq:w3g128+lr:r16' 'gptq:w3g128+lr:r16,scale=diag' 'gptq:w3g128+lr:r16,scale=full'
  'gptq:w2g128+lr:r16' 'gptq:w2g128+lr:r16,scale=diag' 'gptq:w2g128+lr:r16,scale=full'
  # LoPRo and its ablations
  'lopro:w3g128' 'lopro:w2g128' 'lopro:w3g128,sym,clip' 'lopro:w2g128,sym,clip'
  'lopro:w2g128,perm=off' 'lopro:w2g128,rot=none' 'lopro:w2g128,protect=0'
  'lopro:w2g128,rot=global' 'lopro:w2g128,factors=fp16'
)
fi
if [ -n "${MATCH:-}" ]; then
  kept=()
  for r in "${RECIPES[@]}"; do [[ $r =~ $MATCH ]] && kept+=("$r"); done
  RECIPES=("${kept[@]}")
  FP=()
else
  FP=(fp)
fi
run_model() {  # name dir
  python3 bench/quant_table.py --bin build/cuda/lrquant --model "$2" \
    --calib .carry/data/calib.txt --valid .carry/data/valid.txt --wiki .carry/data/wiki.test.raw \
    --kld --quant-device cuda --eval-device cuda --qdir "/tmp/lrq-gpu-q/$1" \
    --out "/tmp/lrq-gpu-tables/$1" --jobs "$JOBS" --threads 4 --recipes "${FP[@]}" "${RECIPES[@]}" \
    >"/tmp/lrq-gpu-tables-$1.md" 2>&1 || true
  cp "/tmp/lrq-gpu-tables/$1/table.json" "$OUTDIR/$1.json" 2>/dev/null || true
  grep -c '^ROW' "/tmp/lrq-gpu-tables-$1.md" | sed "s/^/$1 rows: /"
  grep -E "^FAILED" "/tmp/lrq-gpu-tables-$1.md" | head -n 5
}
t0=$(date +%s)
if [ "$WHICH" = m ] || [ "$WHICH" = both ]; then run_model lab-m .carry/lab-m; fi
if [ "$WHICH" = mx ] || [ "$WHICH" = both ]; then run_model lab-mx .carry/lab-mx; fi
echo "tables took $(($(date +%s) - t0)) s on $(nvidia-smi --query-gpu=name --format=csv,noheader)"
for f in /tmp/lrq-gpu-tables-*.md; do echo "== $f"; grep -v '^ROW' "$f" | grep '^|'; done
