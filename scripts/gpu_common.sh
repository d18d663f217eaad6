# Sourced by the GPU scripts (scripts/gpu_*.sh, bench/*_gpu.sh) so that the machine line, the
# configure + build of the cuda preset, the test runner and the error-budget table are written
# once. The caller sets `logs` (a folder) before calling them.

export PATH=/usr/local/cuda/bin:$PATH

# gpu_args SCRIPT ARG...: the options every test script takes, [--no-bench] [-jN], into $bench
# (1 or 0) and $jobs; anything else is a usage error naming the script.
gpu_args() {
  local name=$1 a
  shift
  bench=1
  jobs=-j$(nproc)
  for a in "$@"; do
    case $a in
      --no-bench) bench=0 ;;
      -j*) jobs=$a ;;
      *) echo "$name: unknown argument $a" >&2; exit 2 ;;
    esac
  done
}

gpu_machine() {
  echo "== machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || exit 1
  nvcc --version | tail -n 1
  cmake --version | head -n 1
}

# ncu_setup SCRIPT TARGET: for the profiling scripts: the machine line, ncu present (else exit 1
# naming SCRIPT), TARGET built with $jobs.
ncu_setup() {
  gpu_machine
  command -v ncu >/dev/null || { echo "$1: ncu not found" >&2; exit 1; }
  cuda_build "$jobs" "$2"
}

# cuda_build JOBS [TARGET...]: configure the cuda preset and build the targets (everything when
# none is named); on failure print the first errors and exit 1. Tests and benchmarks are switched
# on explicitly because bench/gpu_tables.sh configures the same build folder without them.
cuda_build() {
  local jobs=$1 t0 targets=()
  shift
  t0=$(date +%s)
  [ $# -gt 0 ] && targets=(--target "$@")
  echo "== build ($jobs${*:+: $*})"
  if ! cmake --preset cuda -DLRQ_TESTS=ON -DLRQ_BENCH=ON >"$logs/configure.log" 2>&1; then
    tail -n 30 "$logs/configure.log"
    exit 1
  fi
  grep -E "OpenBLAS:|CUDA backend:" "$logs/configure.log"
  if ! cmake --build --preset cuda "$jobs" "${targets[@]}" >"$logs/build.log" 2>&1; then
    grep -E "error|FAILED" "$logs/build.log" | head -n 40
    exit 1
  fi
  echo "built in $(($(date +%s) - t0)) s; warnings: $(grep -c 'warning' "$logs/build.log")"
}

# run_gtest NAME [FILTER [SECONDS]]: one test binary of build/cuda/tests, its log in
# $logs/NAME.log, a summary line and its failures printed; sets rc=1 when it fails.
run_gtest() {
  local t=$1 f=${2:-*} limit=${3:-300}
  timeout "$limit" ./build/cuda/tests/$t --gtest_filter="$f" >"$logs/$t.log" 2>&1 || rc=1
  echo "$t: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$logs/$t.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$logs/$t.log" | sort -u
  grep -B2 -A6 "Failure" "$logs/$t.log" | head -n 30
}

# budget_table N FILE...: the N "[budget] NAME err E budget B" lines closest to their budget
# (ratio err / budget; * marks one over it or not a number).
budget_table() {
  local n=$1
  shift
  echo "== error budgets: the $n closest (ratio = err / budget; * = over)"
  grep -h "\[budget\]" "$@" | sed 's/^[0-9]*: //' | sort -u |
    awk '{ e = $(NF-2); b = $NF; name = $0; sub(/^\[budget\] /, "", name); sub(/ +err .*$/, "", name);
           bad = (e !~ /^[0-9]/) || (e + 0 > b + 0); r = bad ? 1e99 : (b > 0 ? e / b : (e > 0 ? 1e99 : 0));
           printf "%.3e %s %-52s err %-10s budget %s\n", r, bad ? "*" : " ", name, e, b }' |
    sort -g -r | head -n "$n" | cut -d" " -f2-
}
