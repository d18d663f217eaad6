#!/usr/bin/env bash
# Installs the llama.cpp that node-llama-cpp ships prebuilt (CPU variants only, about 83 MB) into
# DIR (default: build/llama_cpp), as ../shared/docs/GGUF.md says: pinned to 3.21.1 (newer releases
# may not install here), install scripts off so nothing is built or downloaded beyond the npm
# packages. Idempotent: an existing install of the pinned version is kept; concurrent runs (tests
# in parallel) wait for each other. Used by tests/gguf_test.cpp and tests/llama_cpp/ppl.mjs.
set -euo pipefail

version=3.21.1
dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/build/llama_cpp"}
case "$(uname -m)" in
  x86_64) platform=linux-x64 ;;
  aarch64 | arm64) platform=linux-arm64 ;;
  *) echo "llama_cpp_setup: no prebuilt llama.cpp for $(uname -m)" >&2; exit 1 ;;
esac

mkdir -p "$dir"
exec 9>"$dir/.install.lock"
flock 9

installed() {
  local pkg="$dir/node_modules/node-llama-cpp/package.json"
  [ -f "$pkg" ] && grep -q "\"version\": \"$version\"" "$pkg" &&
    [ -d "$dir/node_modules/@node-llama-cpp/$platform/bins" ]
}
if installed; then
  exit 0
fi
command -v npm >/dev/null || { echo "llama_cpp_setup: npm not found" >&2; exit 1; }
cd "$dir"
[ -f package.json ] || echo '{"private": true}' >package.json
NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --save-exact --ignore-scripts --omit=optional \
  --no-audit --no-fund "node-llama-cpp@$version" "@node-llama-cpp/$platform@$version"
installed || { echo "llama_cpp_setup: install finished but $dir is incomplete" >&2; exit 1; }
echo "llama_cpp_setup: node-llama-cpp $version ($platform) in $dir"
