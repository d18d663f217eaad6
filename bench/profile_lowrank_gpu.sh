#!/usr/bin/env bash
# Where one low-rank extraction spends its GPU time: builds bench_lowrank_gpu (cuda preset) and
# runs one configuration under ncu (every kernel of one extraction, gpu__time_duration, clocks
# and caches as in a normal run), then
# prints per-kernel totals next to the extraction's wall time (median of event-timed runs
# outside the profiler). The difference is launch gaps and host work (the k x k eigenproblem,
# the stop rule). Needs an NVIDIA GPU and ncu. Logs in $OUT (or build/cuda/profile_lowrank).
#   bench/profile_lowrank_gpu.sh [-jN] [SPEC (default block:b=32,p=8,it=2)] [RANK (64)] [MxN (4096x4096)]
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=-j$(nproc)
if [[ ${1:-} == -j* ]]; then jobs=$1; shift; fi
spec=${1:-block:b=32,p=8,it=2}
rank=${2:-64}
size=${3:-4096x4096}
logs=${OUT:-build/cuda/profile_lowrank}
mkdir -p "$logs"
. scripts/gpu_common.sh
ncu_setup profile_lowrank_gpu.sh bench_lowrank_gpu
args=(--only "$spec" --ranks "$rank" --sizes "$size" --reps 9)
./build/cuda/bench/bench_lowrank_gpu "${args[@]}" 2>&1 | grep -E "^\| [0-9]"
timeout 300 ncu --profile-from-start off --clock-control none --cache-control none --csv --page raw --metrics gpu__time_duration.sum \
  ./build/cuda/bench/bench_lowrank_gpu "${args[@]}" --reps 1 >"$logs/ncu.csv" 2>"$logs/ncu.err" ||
  { echo "ncu failed:"; tail -n 20 "$logs/ncu.err"; exit 1; }
python3 - "$logs/ncu.csv" <<'PY'
import csv, sys, collections, re
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]; k = h.index("Kernel Name"); t = h.index("gpu__time_duration.sum")
unit = rows[hdr + 1][t] if not rows[hdr + 1][t].replace('.', '', 1).replace(',', '').isdigit() else "ns"
tot = collections.defaultdict(lambda: [0, 0.0])
for r in rows[hdr + 1:]:
    try: v = float(r[t].replace(',', ''))
    except ValueError: continue
    name = re.sub(r"\(.*", "", r[k])[:70]
    tot[name][0] += 1; tot[name][1] += v
scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "msecond": 1e3}.get(unit, 1e-3)
print(f"\n| kernel | launches | total us |\n|---|---:|---:|")
s = 0
for name, (n, v) in sorted(tot.items(), key=lambda x: -x[1][1]):
    print(f"| {name} | {n} | {v * scale:.1f} |"); s += v * scale
print(f"| **sum of kernel time** | {sum(n for n, _ in tot.values())} | {s:.1f} |")
PY
