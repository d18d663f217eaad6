#!/usr/bin/env bash
# Configures and builds a preset (default: release, CUDA when nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:-release}
cmake --preset "$PRESET" >/dev/null
cmake --build --preset "$PRESET"
