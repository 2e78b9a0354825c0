#!/usr/bin/env bash
# The README's sweep for plans `amp plan` refuses that `amp eval` says fit
# (see "How good are the plans"). About 25 minutes on a 2-core machine; not in
# CI. Exits non-zero if any case finds one.
#
#   scripts/plan-check/run.sh [AMP]      # default: this checkout's release build
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
amp="${1:-$here/../../target/release/amp}"
status=0
check() { python3 "$here/refused.py" "$amp" "$@" || status=1; }
check "--model opt-1.3b --cluster 1x8xV100" --gpus-per-node 8 --global-batch 64
check "--model llama3.2-1b --seq 4096 --cluster 1x8xH100" --gpus-per-node 8 --global-batch 64
check "--model gpt3-2.7b --seq 2048 --cluster 1x8xV100" --gpus-per-node 8 --global-batch 64
check "--model gpt3-2.7b --seq 2048 --cluster 1x8xV100 --optimizer-sharding zero1" --gpus-per-node 8 --global-batch 64
check "--model gpt3-1.3b --seq 2048 --cluster 1x8xA100 --recompute full" --gpus-per-node 8 --global-batch 64
check "--model llama3.2-3b --seq 4096 --cluster 1x8xA100 --schedule gpipe" --gpus-per-node 8 --global-batch 64
check "--model gpt2-xl --cluster 1x8xT4 --engine deepspeed" --gpus-per-node 8 --global-batch 64
check "--model gpt3-1.3b --seq 2048 --cluster 1x4xA100+1x4xV100" --gpus-per-node 4 --nodes 2 --global-batch 64 --max-pp 2
check "--model llama3.2-1b --seq 4096 --cluster 1x4xH100+1x4xA100" --gpus-per-node 4 --nodes 2 --global-batch 64 --max-pp 2
check "--model gpt3-6.7b --seq 1024 --cluster 1x1xH200" --gpus-per-node 1 --global-batch 1
exit $status
