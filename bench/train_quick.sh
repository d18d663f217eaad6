#!/usr/bin/env bash
# Whole-model fine-tuning on a small model (issue 22, CPU): each mode trained on WikiText-2's
# validation split and scored on its test split (nonoverlap-512), the FP model as the start.
#   bench/train_quick.sh [BIN] [MODEL] [STEPS] [MODES...]
# Each MODES entry is "mode:lr[:rank]" (rank for lora/qlora). Environment: THREADS (2),
# SEQLEN (256), BATCH (4), EVAL_WINDOWS (0 = the whole test text), EVAL_EVERY (0 = first and
# last step only), LORDS_RECIPE (lords:b4),
# NF_RECIPE (nf:b4,block64), OUT (a temporary folder; set it to keep the trained folders).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/cpu/lrquant}
MODEL=${2:-models/lab-s}
STEPS=${3:-200}
shift 3 || true
S=${LRQ_SHARED:-../shared}
TRAIN="$S/data/wikitext-2/wiki.valid.tokens"
TEST="$S/data/wikitext-2/wiki.test.raw"
T=${THREADS:-2}
M=("$@")
((${#M[@]})) || M=("lora:1e-3:8" "qlora:1e-3:1" "lords-peft:1e-3" "lords-qat:1e-4")
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
ew=${EVAL_WINDOWS:-0}
score() {  # folder -> "ppl bpw"
  "$BIN" --threads "$T" eval --model "$1" --text "$TEST" --ctx 512 --max-windows "$ew" --json --quiet |
    python3 -c "import json,sys; print(json.load(sys.stdin)['ppl'])"
}
bpw() {
  python3 -c "import json,sys; q=json.load(open('$1/config.json')).get('quantization_config',{}); print(q.get('total',{}).get('bpw','16 (dense)'))" 2>/dev/null || echo "-"
}
printf 'FP %s: wiki test PPL %.4f (nonoverlap-512)\n\n' "$MODEL" "$(score "$MODEL")"
printf '| mode | lr | rank | trainable | bpw | train loss first 10 -> last 10 | test PPL before | test PPL after | tokens | train s |\n'
printf '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|\n'
for spec in "${M[@]}"; do
  IFS=: read -r mode lr rank <<<"$spec"
  rank=${rank:-8}
  out="$OUT/$mode-$lr-r$rank"
  recipe=${NF_RECIPE:-nf:b4,block64}
  [[ $mode == lords-* ]] && recipe=${LORDS_RECIPE:-lords:b4}
  t0=$(date +%s.%N)
  "$BIN" --threads "$T" train --model "$MODEL" --mode "$mode" --train "$TRAIN" --eval "$TEST" \
    --eval-ctx 512 --eval-windows "$ew" --steps "$STEPS" --seqlen "${SEQLEN:-256}" \
    --batch "${BATCH:-4}" --lr "$lr" --warmup $((STEPS / 10)) --rank "$rank" --recipe "$recipe" \
    --eval-every "${EVAL_EVERY:-0}" --seed 0 --out "$out" --force --quiet
  t1=$(date +%s.%N)
  python3 - "$out" "$mode" "$lr" "$rank" "$(bpw "$out")" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
out, mode, lr, rank, bpw, secs = sys.argv[1:]
t = json.load(open(out + "/config.json"))["quantization_config"]["training"]
loss = [e["loss"] for e in t["curve"] if "loss" in e]
ev = [e["eval_ppl"] for e in t["curve"] if "eval_ppl" in e]
k = min(10, len(loss))
a, b = sum(loss[:k]) / k, sum(loss[-k:]) / k
rk = rank if mode in ("lora", "qlora") else "-"
curve = " ".join(f"{e['step']}:{e['eval_ppl']:.2f}" for e in t["curve"] if "eval_ppl" in e)
print(f"| {mode} | {lr} | {rk} | {t['trainable_parameters']} | {bpw} | {a:.4f} -> {b:.4f} | "
      f"{ev[0]:.4f} | {ev[-1]:.4f} | {t['tokens']} | {float(secs):.0f} |")
print(f"<!-- {mode} lr {lr} eval curve (step:ppl): {curve} -->", file=sys.stderr)
PY
done
