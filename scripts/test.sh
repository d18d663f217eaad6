#!/usr/bin/env bash
# The test command (README, CI): setup, build, run every CPU test. GPU tests (label gpu) run on
# a CUDA machine with scripts/gpu_test.sh. Shared data: $LRQ_SHARED or ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh release
ctest --preset release --output-on-failure "$@"
