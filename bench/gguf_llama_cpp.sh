#!/usr/bin/env bash
# GGUF exports measured by llama.cpp itself against lrquant's own evaluation of the same file:
# nonoverlap-512 perplexity on the first W windows of the lab corpus's valid.txt, for the F32,
# Q8_0 and Q4_0 exports of lab-s and lab-m (and the bit-exact transcode of an rtn:w4g32,sym
# lab-s folder). Prints a Markdown table (bench/NOTES.md, "GGUF").
#   bench/gguf_llama_cpp.sh [WINDOWS=64] [BUILD=build/cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
windows=${1:-64}
build=${2:-build/cpu}
shared=${LRQ_SHARED:-../shared}
text=$shared/data/lab-corpus/valid.txt
lrq=$build/lrquant
llama_dir=$build/llama_cpp
scripts/llama_cpp_setup.sh "$llama_dir" >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

row() {  # model-label gguf
  local ours theirs
  ours=$("$lrq" eval --model "$2" --text "$text" --ctx 512 --max-windows "$windows" --quiet --json)
  theirs=$(node tests/llama_cpp/ppl.mjs --llama-dir "$llama_dir" --model "$2" --text "$text" \
           --ctx 512 --max-windows "$windows" --threads "$(nproc)")
  python3 - "$1" "$2" "$ours" "$theirs" <<'PY'
import json, os, sys
label, path, ours, theirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
assert ours["tokens"] == theirs["tokens"], (ours["tokens"], theirs["tokens"])
rel = theirs["ppl"] / ours["ppl"] - 1
print(f"| {label} | {os.path.getsize(path) / 2**20:.2f} | {ours['ppl']:.6f} | {theirs['ppl']:.6f} | {rel:+.2e} |")
PY
}

echo "| model, export | MiB | lrquant ppl | llama.cpp ppl | llama.cpp / lrquant - 1 |"
echo "|---|---:|---:|---:|---:|"
for model in models/lab-s "$shared/models/lab-m"; do
  name=$(basename "$model")
  for type in f32 q8_0 q4_0; do
    "$lrq" export --model "$model" --out "$out/$name-$type.gguf" --type "$type" >/dev/null
    row "$name $type" "$out/$name-$type.gguf"
  done
done
"$lrq" quantize --model models/lab-s --calib "$shared/data/lab-corpus/calib.txt" --nsamples 128 \
  --seqlen 512 --recipe rtn:w4g32,sym --out "$out/lab-s-rtn" >/dev/null 2>&1
"$lrq" export --model "$out/lab-s-rtn" --out "$out/lab-s-rtn.gguf" >/dev/null
row "lab-s rtn:w4g32,sym (transcoded Q4_0)" "$out/lab-s-rtn.gguf"
