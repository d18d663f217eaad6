#!/usr/bin/env bash
# llama.cpp's Q4_K_M / Q3_K_M / Q2_K (llama_model_quantize on lrquant's F32 export) against
# lrquant's gptq:q4_k / q3_k / q2_k with the same per-tensor mix and two low-rank recipes with a
# LoRA adapter, all evaluated by llama.cpp (perplexity, KL divergence against the F32 export).
# bench/gguf_peer.py has the details; this wrapper only picks the defaults.
#   bench/gguf_peer.sh [MODELS=lab-m,lab-mx] [WINDOWS=8] [BUILD=build/cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/gguf_peer.py --models "${1:-lab-m,lab-mx}" --windows "${2:-8}" \
  --build "${3:-build/cpu}"
