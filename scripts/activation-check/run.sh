#!/usr/bin/env bash
# What a decoder block keeps for its backward in Hugging Face's own code,
# against amp's prediction (see check.py; --deepspeed: the model in bf16
# weights as DeepSpeed runs it, against --block-kernels eager), or with
# --peak a whole training iteration's peak memory (see peak.py):
#
#   scripts/activation-check/run.sh [--deepspeed | --peak] [FAMILY ...]
#
# or with --transgan DIR what a TransGAN block of the AMP artifact keeps, in
# the artifact's own code (DIR: its Megatron-LM-v1.1.5-3D_parallelism
# folder; see transgan.py, which needs torch only):
#
#   scripts/activation-check/run.sh --transgan DIR
#
# or with --megatron DIR what Megatron-LM's own block keeps (Megatron Core's
# local layer spec, on the CPU; DIR: a Megatron-LM checkout; see
# megatron_block.py, which needs torch, einops, numpy, packaging and PyYAML):
#
#   scripts/activation-check/run.sh --megatron DIR
#
# Makes a virtual environment under $AMP_ACTIVATION_CHECK_CACHE (default
# ~/.cache/amp-activation-check) with torch and transformers from PyPI at
# the versions below (PyPI's torch brings its CUDA libraries, about 6 GB,
# though the check runs on the CPU), builds amp (or takes AMP_BIN) and prints
# the table. PYTHON=path/to/python uses an environment that has torch and
# transformers already (the engine check's, with transformers added, will
# do). Exit status 2 when the environment cannot be set up. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."

TORCH_VERSION=2.15.0
TRANSFORMERS_VERSION=5.25.0

if [ -z "${PYTHON:-}" ]; then
  CACHE="${AMP_ACTIVATION_CHECK_CACHE:-$HOME/.cache/amp-activation-check}"
  VENV="$CACHE/venv"
  STAMP="$VENV/.amp-activation-check-$TORCH_VERSION-$TRANSFORMERS_VERSION"
  if [ ! -f "$STAMP" ]; then
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV" || exit 2
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" \
      || { echo "activation-check: could not install torch $TORCH_VERSION and transformers $TRANSFORMERS_VERSION" >&2; exit 2; }
    touch "$STAMP"
  fi
  PYTHON="$VENV/bin/python"
fi
NEEDS="torch, transformers"
[ "${1:-}" = "--transgan" ] && NEEDS=torch
[ "${1:-}" = "--megatron" ] && NEEDS="torch, einops"
"$PYTHON" -c "import $NEEDS" 2>/dev/null || {
  echo "activation-check: $PYTHON does not import $NEEDS" >&2; exit 2; }

if [ -z "${AMP_BIN:-}" ]; then
  cargo build --release -q -p amp-cli || exit 2
  AMP_BIN=target/release/amp
fi
SCRIPT=check.py
if [ "${1:-}" = "--peak" ]; then
  SCRIPT=peak.py
  shift
elif [ "${1:-}" = "--transgan" ]; then
  [ -n "${2:-}" ] || { echo "activation-check: --transgan needs the artifact's Megatron-LM folder" >&2; exit 2; }
  exec "$PYTHON" scripts/activation-check/transgan.py --amp "$AMP_BIN" --artifact "$2" "${@:3}"
elif [ "${1:-}" = "--megatron" ]; then
  [ -n "${2:-}" ] || { echo "activation-check: --megatron needs a Megatron-LM checkout" >&2; exit 2; }
  exec "$PYTHON" -W ignore scripts/activation-check/megatron_block.py --amp "$AMP_BIN" --megatron "$2" "${@:3}"
fi
exec "$PYTHON" "scripts/activation-check/$SCRIPT" --amp "$AMP_BIN" "$@"
