#!/usr/bin/env bash
# The test command (README, CI): setup, build, run every CPU test, then a short fuzzing run of
# every input parser (10 s a target under ASan+UBSan; skipped with a message where clang's
# libFuzzer is not installed). GPU tests (label gpu) run on a CUDA machine with
# scripts/gpu_test.sh. Shared data: $LRQ_SHARED or ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh release
ctest --preset release --output-on-failure "$@"
./scripts/fuzz.sh --ci
