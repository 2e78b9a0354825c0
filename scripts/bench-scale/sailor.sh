#!/usr/bin/env bash
# Whole `amp plan --sailor-data` processes on Sailor's six planning
# scenarios (OPT-350M and GPT-Neo-2.7B on A100-40 + V100-16 nodes of 4 GPUs,
# global batch 1024), default search and the opt-in ones: median wall time
# of N runs (default 3) and the largest peak RSS, one line per case.
#
#   scripts/bench-scale/sailor.sh                     # this build
#   AMP_BASE=/path/to/other/amp scripts/bench-scale/sailor.sh
#       # the same, each run interleaved with one of the other build, both
#       # reported (for comparisons on this drifting machine)
#   ONLY="--uneven-dp --per-type-tp" scripts/bench-scale/sailor.sh
#       # one of the three searches only ("" for the default one); also
#       # ONLY="--uneven-dp --per-type-tp --fewer-replicas",
#       # ONLY="--uneven-dp --per-stage-tp" and ONLY="--per-stage-tp", run
#       # only so
#
# Needs a release build (cargo build --release) and ../shared/data/sailor.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
amp="${AMP_BIN:-$here/../../target/release/amp}"
data="$here/../../../shared/data/sailor"
n="${N:-3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bins=("$amp")
if [ -n "${AMP_BASE:-}" ]; then bins=("$AMP_BASE" "$amp"); fi
summary() {
  sort -n -k1 "$1" | awk -v n="$n" 'NR==int((n+1)/2){t=$1} {if($2>m)m=$2} END{printf "%.2f s (%d MB)", t, m/1024}'
}
for model in OPT-350 GPT-Neo-2.7; do
  for cluster in 8x4xA100-40+24x4xV100-16 20x4xA100-40+60x4xV100-16 32x4xA100-40+96x4xV100-16; do
    for flags in "" "--uneven-dp" "--uneven-dp --per-type-tp" "--uneven-dp --per-type-tp --fewer-replicas" \
      "--uneven-dp --per-stage-tp" "--per-stage-tp"; do
      if [ -n "${ONLY+set}" ] && [ "$flags" != "$ONLY" ]; then continue; fi
      # The last three only when asked for by name.
      case "$flags" in *fewer-replicas*|*per-stage-tp*) [ -n "${ONLY+set}" ] || continue ;; esac
      for k in "${!bins[@]}"; do : > "$tmp/t$k"; done
      for _ in $(seq "$n"); do
        for k in "${!bins[@]}"; do
          # shellcheck disable=SC2086
          /usr/bin/time -f "%e %M" -o "$tmp/one" "${bins[$k]}" plan --sailor-data "$data" \
            --model "$model" --cluster "$cluster" --global-batch 1024 --top 1 -q $flags > /dev/null 2>&1
          cat "$tmp/one" >> "$tmp/t$k"
        done
      done
      line="$model $cluster [${flags:-default}]"
      for k in "${!bins[@]}"; do line="$line | $(summary "$tmp/t$k")"; done
      echo "$line"
    done
  done
done
