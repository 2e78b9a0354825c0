#!/usr/bin/env bash
# Whole `amp plan` processes at cluster scale: median wall time of RUNS runs
# (default 3) and the largest peak RSS (GNU time's "Maximum resident set
# size"), one line per case. Needs a release build (cargo build --release)
# and /usr/bin/time; AMP_BIN overrides the binary, CASE_TIMEOUT (seconds,
# default 600) stops a run that takes longer.
#
#   scripts/bench-scale/run.sh            # every case
#   scripts/bench-scale/run.sh 405b       # the cases whose name contains 405b
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
amp="${AMP_BIN:-$here/../../target/release/amp}"
runs="${RUNS:-3}"
filter="${1:-}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 "$here/three_types.py" 2 > "$tmp/three-2.toml"
python3 "$here/three_types.py" 64 > "$tmp/three-64.toml"
python3 "$here/layer_list.py" 1020 > "$tmp/layers-1020.toml"
python3 "$here/layer_list.py" 8000 > "$tmp/layers-8000.toml"

cases=(
  "three-types-2x3-links|--model opt-350m --seq 2048 --cluster $tmp/three-2.toml --global-batch 1024"
  "three-types-64x3-links|--model opt-350m --seq 2048 --cluster $tmp/three-64.toml --global-batch 1024"
  # Megatron-LM with sequence parallelism: without it no 405B plan fits
  # (every tp rank keeps the norms' and projections' inputs whole).
  "llama3.1-405b-16384xH100|--model llama3.1-405b --cluster 2048x8xH100 --global-batch 2048 --seq 8192 --engine megatron --sequence-parallel"
  "llama3-8b-16384xH100|--model llama3-8b --seq 8192 --cluster 2048x8xH100 --global-batch 2048"
  "llama3-8b-batch-131072|--model llama3-8b --seq 4096 --cluster 16x8xH100 --global-batch 131072"
  "layers-1020-64xH100|--model $tmp/layers-1020.toml --cluster 8x8xH100 --global-batch 512"
  "layers-8000-64xH100|--model $tmp/layers-8000.toml --cluster 8x8xH100 --global-batch 512"
  # The opt-in searches beyond AMP's space on three GPU types x 256 GPUs
  # (tens of thousands of layouts). GPT-3 2.7B: its 32 heads split at every
  # tp the nodes allow (GPT-2 XL's 25 split at none, so it has no per-type plans).
  "per-type-3x256|--model gpt3-2.7b --cluster 32x8xA100@200Gbps+32x8xV100@100Gbps+32x8xT4@50Gbps --global-batch 1024 --per-type-tp"
  "per-type-uneven-3x256|--model gpt3-2.7b --cluster 32x8xA100@200Gbps+32x8xV100@100Gbps+32x8xT4@50Gbps --global-batch 1024 --per-type-tp --uneven-dp"
  "per-stage-uneven-3x256|--model gpt3-2.7b --cluster 32x8xA100@200Gbps+32x8xV100@100Gbps+32x8xT4@50Gbps --global-batch 1024 --per-stage-tp --uneven-dp"
)
printf '%-28s %10s %12s  %s\n' case median_s peak_rss_mb best
for c in "${cases[@]}"; do
  name="${c%%|*}"
  args="${c#*|}"
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  times=()
  rss=0
  for _ in $(seq "$runs"); do
    # shellcheck disable=SC2086
    if ! timeout "${CASE_TIMEOUT:-600}" /usr/bin/time -v "$amp" plan $args -q --top 1 > "$tmp/out" 2> "$tmp/err"; then
      echo "$name: amp failed or took over ${CASE_TIMEOUT:-600} s: $(grep -v '^\s' "$tmp/err" | head -2)"
      continue 2
    fi
    t=$(grep 'Elapsed (wall clock)' "$tmp/err" | awk '{print $NF}' | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
    r=$(grep 'Maximum resident set size' "$tmp/err" | awk '{print $NF}')
    times+=("$t")
    (( r > rss )) && rss=$r
  done
  median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  best=$(grep '^best' "$tmp/out" | sed 's/;.*//')
  printf '%-28s %10s %12d  %s\n' "$name" "$median" $((rss / 1024)) "$best"
done
