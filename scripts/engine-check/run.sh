#!/usr/bin/env bash
# Runs amp's exports through the engines' own code (see check.py):
#
#   scripts/engine-check/run.sh [--megatron-lm PATH] [--engines megatron,deepspeed,torchtitan]
#
# Makes a Python 3.12 virtual environment under $AMP_ENGINE_CHECK_CACHE
# (default ~/.cache/amp-engine-check), installs the engines' packages from
# PyPI at the versions below, builds amp, exports the fixed plans of
# check.py and checks them. Megatron-LM's training arguments and
# pretrain_gpt.py's model builder are not in the megatron-core wheel: give a
# checkout of NVIDIA/Megatron-LM with --megatron-lm or MEGATRON_LM, or its
# checks are skipped (said on stderr and in the results).
#
# Exit status: 0 when every check passed, 1 on a mismatch or rejection, 2
# when the environment could not be set up (never a pass).
set -euo pipefail
cd "$(dirname "$0")/../.."

TORCH_VERSION=2.15.0
DEEPSPEED_VERSION=0.19.8
MEGATRON_CORE_VERSION=0.19.2
TORCHTITAN_VERSION=0.3.0

ENGINES=megatron,deepspeed,torchtitan
RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --megatron-lm) MEGATRON_LM="$2"; shift 2 ;;
    --engines) ENGINES="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

CACHE="${AMP_ENGINE_CHECK_CACHE:-$HOME/.cache/amp-engine-check}"
VENV="$CACHE/venv"
mkdir -p "$CACHE"

# megatron-core 0.19 needs Python >= 3.12.
PY=""
for cand in python3.12 python3.13 "$HOME/.pyenv/versions/3.12.1/bin/python3" python3; do
  if command -v "$cand" >/dev/null 2>&1 \
    && "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    PY="$cand"; break
  fi
done
if [ -z "$PY" ]; then
  echo "engine-check: no Python >= 3.12 found (megatron-core $MEGATRON_CORE_VERSION needs it)" >&2
  exit 2
fi

STAMP="$VENV/.amp-engine-check-$TORCH_VERSION-$DEEPSPEED_VERSION-$MEGATRON_CORE_VERSION-$TORCHTITAN_VERSION"
if [ ! -f "$STAMP" ]; then
  echo "engine-check: installing torch $TORCH_VERSION, deepspeed $DEEPSPEED_VERSION, megatron-core $MEGATRON_CORE_VERSION, torchtitan $TORCHTITAN_VERSION into $VENV (PyPI's torch brings its CUDA libraries: ~6 GB, 10-15 min)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || exit 2
  start=$(date +%s)
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" "deepspeed==$DEEPSPEED_VERSION" \
    "megatron-core==$MEGATRON_CORE_VERSION" "torchtitan==$TORCHTITAN_VERSION" || {
      echo "engine-check: pip install failed" >&2; exit 2; }
  echo "engine-check: installed in $(( $(date +%s) - start )) s" >&2
  touch "$STAMP"
fi

if [ -z "${AMP_BIN:-}" ]; then
  cargo build --release -q -p amp-cli || exit 2
  AMP_BIN=target/release/amp
fi

if [ -n "${MEGATRON_LM:-}" ]; then
  if [ ! -f "$MEGATRON_LM/pretrain_gpt.py" ]; then
    echo "engine-check: MEGATRON_LM=$MEGATRON_LM has no pretrain_gpt.py; give a Megatron-LM checkout" >&2
    exit 2
  fi
  export MEGATRON_LM
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
args=(--amp "$AMP_BIN" --work "$WORK" --python "$VENV/bin/python" --engines "$ENGINES")
[ -n "$RESULTS" ] && args+=(--results "$RESULTS")
"$VENV/bin/python" -c 'import torch, deepspeed, megatron.core, torchtitan' 2>/dev/null || {
  echo "engine-check: the environment in $VENV does not import; remove it and rerun" >&2; exit 2; }
"$VENV/bin/pip" list 2>/dev/null | grep -iE '^(torch|deepspeed|megatron-core|torchtitan) ' >&2 || true
exec "$VENV/bin/python" scripts/engine-check/check.py "${args[@]}"
