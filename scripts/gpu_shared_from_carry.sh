#!/usr/bin/env bash
# On the device machine (no ../shared there): lays out a stand-in for ../shared from what the
# call carried in .carry/ (data/{calib,valid}.txt, wiki.test.raw, and lab-m or lab-mx) and
# prints the folder, for LRQ_SHARED. Tests whose files were not carried skip with a message.
#   export LRQ_SHARED=$(scripts/gpu_shared_from_carry.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
S=/tmp/lrq-shared
rm -rf "$S"
mkdir -p "$S/data/lab-corpus" "$S/data/wikitext-2" "$S/models"
for f in calib.txt valid.txt; do
  [ -f ".carry/data/$f" ] && ln -s "$PWD/.carry/data/$f" "$S/data/lab-corpus/$f"
done
[ -f .carry/data/wiki.test.raw ] && ln -s "$PWD/.carry/data/wiki.test.raw" "$S/data/wikitext-2/wiki.test.raw"
for m in lab-m lab-mx; do [ -d ".carry/$m" ] && ln -s "$PWD/.carry/$m" "$S/models/$m"; done
ln -s "$PWD/models/lab-s" "$S/models/lab-s"
echo "$S"
