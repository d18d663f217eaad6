#!/usr/bin/env bash
# Fuzzes the input parsers (fuzz/README.md): builds the libFuzzer targets under ASan+UBSan
# (preset fuzz, clang), writes the seed corpora, and runs each target for a given time.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [--ci] [--no-build] [TARGET...]
#
# --seconds N  per target (default 300); --jobs J  targets run at once (default: cores / 2, at
# least 1); --ci  a short run for the test command (10 s a target, results not recorded);
# --no-build  run the targets already in build/fuzz (e.g. copied to a bigger machine).
# A crash, leak, hang (10 s an input) or UBSan report stops that target; its input is kept under
# build/fuzz/artifacts/ and the script exits 1. Each target's executions are appended to
# bench/fuzz/runs.tsv (unless --ci), with the machine; the totals per target are printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=300
jobs=$(( $(nproc) / 2 ))
((jobs >= 1)) || jobs=1
ci=0
build=1
targets=()
while (($#)); do
  case "$1" in
    --seconds) secs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --ci) ci=1; secs=10; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(safetensors hf_config sentencepiece llama2c_tokenizer llama2c_model quant_config
     quant_tensors recipe gguf)
((${#targets[@]})) || targets=("${all[@]}")

fuzzer_lib=$(clang++ -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null || true)
if ((build)) && { ! command -v clang++ >/dev/null || [[ ! -f "$fuzzer_lib" ]]; }; then
  echo "fuzz.sh: clang with libFuzzer not found (Debian: clang libclang-rt-dev libomp-dev); skipping" >&2
  exit 0
fi

if ((build)); then
  cmake --preset fuzz >/dev/null
  cmake --build build/fuzz --target fuzz_make_seeds $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
fi
shared="${LRQ_SHARED:-$PWD/../shared}"
rm -rf build/fuzz/seeds
ASAN_OPTIONS=detect_leaks=1 build/fuzz/fuzz/fuzz_make_seeds build/fuzz/seeds "$shared" >/dev/null
mkdir -p build/fuzz/corpus build/fuzz/artifacts build/fuzz/logs

run_one() {
  local t=$1 secs=$2
  mkdir -p "build/fuzz/corpus/$t"
  local extra=()
  [[ -d "fuzz/regressions/$t" ]] && extra+=("fuzz/regressions/$t")
  # Text inputs stay short (each mutation re-parses the whole input); binary formats take the
  # size of their largest seed (libFuzzer's default).
  case $t in hf_config|recipe) extra+=(-max_len=8192) ;; esac
  # The first folder collects what the run finds new; the others are read only.
  # One OpenMP thread: the inputs are tiny, and idle workers spinning cost executions.
  OMP_NUM_THREADS=1 \
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0:handle_abort=1:malloc_context_size=8 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "build/fuzz/fuzz/fuzz_$t" "build/fuzz/corpus/$t" "build/fuzz/seeds/$t" "${extra[@]}" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="build/fuzz/artifacts/$t-" >"build/fuzz/logs/$t.log" 2>&1
}
export -f run_one

status=0
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c "run_one {} $secs" || status=1

machine="$(nproc)-core $(uname -m) $(hostname)"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log=bench/fuzz/runs.tsv
if ((!ci)); then
  mkdir -p bench/fuzz
  [[ -f $log ]] || printf 'date\tmachine\trev\ttarget\tseconds\texecutions\tresult\n' >"$log"
fi
printf '%-18s %10s %8s  %s\n' target executions exec/s result
for t in "${targets[@]}"; do
  f="build/fuzz/logs/$t.log"
  n=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$f" | tail -1 | awk '{print $2}')
  n=${n:-0}
  if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|fuzz: bad error|ALARM: working on the last Unit' "$f"; then
    result=FAIL
    status=1
  else
    result=ok
  fi
  printf '%-18s %10s %8s  %s\n' "$t" "$n" $((n / secs)) "$result"
  ((ci)) || printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$when" "$machine" "$rev" "$t" "$secs" "$n" "$result" >>"$log"
  if [[ $result == FAIL ]]; then
    echo "--- $t: $(grep -m1 -E 'ERROR:|runtime error:|fuzz: bad error|ALARM' "$f")" >&2
  fi
done
if ((!ci)) && [[ -f $log ]]; then
  echo "totals over every recorded run ($log):"
  awk -F'\t' 'NR > 1 { n[$4] += $6; if ($7 != "ok") bad[$4]++ }
    END { for (t in n) printf "  %-18s %12d executions, %d failed runs\n", t, n[t], bad[t] }' "$log" | sort
fi
exit $status
