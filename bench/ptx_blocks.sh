#!/usr/bin/env bash
# Static instruction counts of one CUDA kernel, per PTX basic block, without a GPU: compiles a
# .cu file of the release build to PTX with the build's own nvcc command and prints each block
# of the first kernel whose mangled name matches, with its instruction, mma and barrier counts
# (loops show as the large blocks with mma or loads; the dynamic counts need ncu on a GPU).
#   bench/ptx_blocks.sh SOURCE.cu KERNEL_REGEX
# e.g. bench/ptx_blocks.sh src/backend/cuda/packed_mma_cuda.cu 'packed_gemv_mma_kernelILi4ELi0ELi1ELi2ELi1EE'
# (build/release must be configured with CUDA; see scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/ptx_blocks.sh SOURCE.cu KERNEL_REGEX" >&2; exit 2; }
src=$1 regex=$2
[ -f "$src" ] || { echo "bench/ptx_blocks.sh: $src: no such file" >&2; exit 2; }
cmd=$(cd build/release && ninja -t commands | grep "nvcc.* -c [^ ]*$(basename "$src")" | head -1) || true
[ -n "$cmd" ] || { echo "bench/ptx_blocks.sh: no nvcc command for $src in build/release" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cmd=$(echo "$cmd" | sed "s# -o [^ ]*\.o# -o $out/k.ptx#; s# -c # -ptx #")
(cd build/release && eval "$cmd")
python3 - "$out/k.ptx" "$regex" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"\.entry (\S*(?:%s)\S*)\(" % sys.argv[2], text)
if not m:
    sys.exit("bench/ptx_blocks.sh: no kernel matches %s" % sys.argv[2])
start = text.index(m.group(0))
body = text[start:text.index("\n}\n", start)]
print(m.group(1))
blocks, cur = [], ["entry", 0, 0, 0]
for line in body.split("\n"):
    line = line.strip()
    if re.match(r"^\$\w+:", line):
        blocks.append(cur)
        cur = [line[:-1], 0, 0, 0]
    elif line.endswith(";") and not line.startswith((".", "//")):
        cur[1] += 1
        cur[2] += "mma.sync" in line
        cur[3] += "bar.sync" in line or "barrier" in line
blocks.append(cur)
print("| block | instructions | mma | barriers |\n| --- | ---: | ---: | ---: |")
for b in blocks:
    print("| %s | %d | %d | %d |" % tuple(b))
print("| total | %d | %d | %d |" % tuple(sum(b[i] for b in blocks) for i in (1, 2, 3)))
EOF
