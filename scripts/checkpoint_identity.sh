#!/usr/bin/env bash
# Fingerprints the lab-s checkpoints that `lrquant quantize` writes for every recipe of
# docs/RECIPES.md's examples plus awq, nf and the +lr weightings: one line per recipe with the
# SHA-256 of model.safetensors and of quantization_config.layers (canonical JSON, without the
# per-layer "kind" and "transforms" tags that format_version 2 adds; provenance holds timings
# and is left out).
# Run it with two binaries and diff the outputs to show a refactor is behaviour-neutral:
#   scripts/checkpoint_identity.sh build/release/lrquant > after.txt
# Needs ../shared (or $LRQ_SHARED) for the calibration text. 2-core box: about 1 minute.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/release/lrquant}
SHARED=${LRQ_SHARED:-../shared}
CALIB=$SHARED/data/lab-corpus/calib.txt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
RECIPES=(
  "rtn:w4g128" "rtn:w3g128,sym,clip" "gptq:w4g128,act_order" "awq:w4g128,base=gptq" "nf:b4,block64"
  "gptq:w3g128+lr:r16,scale=diag" "flrq:w3g128" "flrq:w2g128,residual=gptq"
  "lopro:w2g128,block128,protect=1" "awq:w4g128" "nf:b3" "gptq:w3g128+lr:r16"
  "rtn:w4g128+lr:r8,scale=full"
)
for r in "${RECIPES[@]}"; do
  out=$TMP/ck
  "$BIN" quantize --model models/lab-s --calib "$CALIB" --nsamples 16 --seqlen 256 --recipe "$r" \
    --out "$out" --force --quiet > /dev/null
  st=$(sha256sum "$out/model.safetensors" | cut -c1-16)
  meta=$(python3 -c '
import json, sys, hashlib
q = json.load(open(sys.argv[1]))["quantization_config"]["layers"]
for v in q.values():
    v.pop("kind", None)
    v.pop("transforms", None)
print(hashlib.sha256(json.dumps(q, sort_keys=True).encode()).hexdigest()[:16])' "$out/config.json")
  printf '%-36s safetensors %s layers %s\n' "$r" "$st" "$meta"
done
