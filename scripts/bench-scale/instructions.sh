#!/usr/bin/env bash
# Instructions executed by the per-type search (`--per-type-tp --uneven-dp`)
# on two of Sailor's scenarios (OPT-350M on 80 + 240 GPUs, GPT-Neo-2.7B on
# 128 + 384), one thread, under valgrind's callgrind: an exact count where
# wall time drifts with the machine, for comparing builds. One line per
# build, the sum of the two counts.
#
#   scripts/bench-scale/instructions.sh                   # this build
#   scripts/bench-scale/instructions.sh BIN [BIN ...]     # other builds
#   FLAGS="--uneven-dp --per-stage-tp" scripts/bench-scale/instructions.sh
#       # another search (default: --uneven-dp --per-type-tp)
#
# Needs valgrind, a release build and ../shared/data/sailor. About 15 s a
# build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/../../../shared/data/sailor"
flags="${FLAGS:---uneven-dp --per-type-tp}"
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then bins=("$here/../../target/release/amp"); fi
for b in "${bins[@]}"; do
  total=0
  for mc in "OPT-350 20x4xA100-40+60x4xV100-16" "GPT-Neo-2.7 32x4xA100-40+96x4xV100-16"; do
    read -r model cluster <<< "$mc"
    # shellcheck disable=SC2086
    n=$(RAYON_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$b" plan \
      --sailor-data "$data" --model "$model" --cluster "$cluster" --global-batch 1024 --top 1 -q \
      $flags 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    total=$((total + n))
  done
  echo "$b [$flags]: $total instructions"
done
