#!/usr/bin/env bash
# Nsight Compute profile of the decode GEMV kernels on one 7B shape, for a machine with an
# NVIDIA GPU and ncu: builds bench_decode_gpu (cuda preset) and profiles one launch of each
# named kernel while the benchmark runs that shape, real clocks (--clock-control none), caches
# flushed between passes (ncu's default). Prints duration, DRAM throughput, occupancy, register
# count, executed instructions, issue utilization and the stall reasons above 0.1 warps per
# issue; full reports in $OUT (or build/cuda/profile_decode). About 2 minutes on an H100.
#   bench/profile_decode_gpu.sh [-jN] [--shape OUTxIN] [KERNEL_REGEX...]
# KERNEL_REGEX matches mangled names; the default profiles the tensor-core kernel at 4 and 2
# bits (affine, T = 1, the variants that 11008 rows use: 2 tiles at 4 bits, 4 at 2, depth 1)
# and the CUDA-core kernel at 4 bits (R4 U2). The tensor-core kernel's arguments are <bits,
# format, tokens, tiles, depth>.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=-j$(nproc)
shape=11008x4096
while [ $# -gt 0 ]; do
  case $1 in
    -j*) jobs=$1; shift ;;
    --shape) shape=$2; shift 2 ;;
    *) break ;;
  esac
done
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(packed_gemv_mma_kernelILi4ELi0ELi1ELi2ELi1EEE
  packed_gemv_mma_kernelILi2ELi0ELi1ELi4ELi1EEE packed_gemv_kernelILi4ELi0ELi4ELi1ELi2EEE)
logs=${OUT:-build/cuda/profile_decode}
mkdir -p "$logs"
. scripts/gpu_common.sh
ncu_setup profile_decode_gpu.sh bench_decode_gpu
for k in "${kernels[@]}"; do
  echo "== $k ($shape)"
  timeout 300 ncu --clock-control none --kernel-name-base mangled --kernel-name "regex:$k" \
    --launch-skip 3 --launch-count 1 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --metrics smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
    ./build/cuda/bench/bench_decode_gpu --no-model --shape "$shape" --reps 3 >"$logs/$k.txt" 2>&1 ||
    echo "ncu failed (see $logs/$k.txt)"
  grep -E "Duration|DRAM Throughput|Achieved Occupancy|Registers Per|inst_executed\.sum|issue_active\.avg" "$logs/$k.txt"
  grep "stalled" "$logs/$k.txt" | awk '$NF+0 > 0.1' |
    sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//'
done
