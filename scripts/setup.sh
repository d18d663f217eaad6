#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages lrquant builds against. Idempotent: installs only what is
# missing, so a second run costs a dpkg query. CUDA is not installed here; the build uses it
# when nvcc is found (CUDA toolkit from NVIDIA's packages or /usr/local/cuda).
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config
      libopenblas-openmp-dev liblapacke-dev
      nlohmann-json3-dev libcli11-dev libfmt-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      python3 xz-utils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
