#!/usr/bin/env bash
# The whole CPU test suite (slow tests included) under AddressSanitizer + UndefinedBehaviorSanitizer
# (preset sanitize). Any report fails its test: UBSan halts on the first error, ASan reports
# leaks at exit. About three times the release suite's time; the CI keeps the release preset
# (scripts/test.sh) to stay within its time, and this script is run before a release and
# after changes to parsing, memory or threading code (bench/RESULTS.md records its runs).
#   scripts/sanitize.sh [ctest arguments, e.g. -R Pipeline]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake --preset sanitize >/dev/null
cmake --build --preset sanitize
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Not the preset's filter: that one leaves the slow tests out.
exec ctest --test-dir build/sanitize --output-on-failure -LE gpu --timeout 5400 "$@"
