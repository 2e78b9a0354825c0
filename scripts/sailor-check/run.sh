#!/usr/bin/env bash
# amp's Sailor exports read and priced by Sailor's own code (see check.py):
#
#   scripts/sailor-check/run.sh [--sailor PATH] [--results FILE] [--top N]
#
# Makes a Python virtual environment under $AMP_SAILOR_CHECK_CACHE (default
# ~/.cache/amp-sailor-check) with what Sailor's validation module imports,
# builds amp, and runs check.py on ../shared/data/sailor. Sailor's code comes
# from --sailor PATH (or SAILOR), a checkout of github.com/eth-easl/sailor;
# without one it is cloned into the cache at the commit below. Only Sailor's
# simulator and its network and model files are used, nothing it measured.
#
# Exit status: 0 when every check passed, 1 on a failed check, 2 when the
# environment could not be set up (never a pass).
set -euo pipefail
cd "$(dirname "$0")/../.."

SAILOR_COMMIT=cf2c8e3cc53ce178fe58a4003f46b4b6b848fc33
# What sailor/Planner/simulations/validation/validate.py imports, at the
# versions the recorded run used.
PACKAGES="torch==2.15.0 pandas==3.1.1 einops==0.8.2 tqdm==4.70.1 transformers==5.24.0 pymetis==2025.2.2"

RESULTS=""
TOP=3
while [ $# -gt 0 ]; do
  case "$1" in
    --sailor) SAILOR="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    --top) TOP="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

DATA="../shared/data/sailor"
if [ ! -f "$DATA/profiles.json" ]; then
  echo "sailor-check: $DATA/profiles.json not found (the shared data folder beside the checkout)" >&2
  exit 2
fi

CACHE="${AMP_SAILOR_CHECK_CACHE:-$HOME/.cache/amp-sailor-check}"
VENV="$CACHE/venv"
mkdir -p "$CACHE"
STAMP="$VENV/.amp-sailor-check-$(echo "$PACKAGES" | tr ' =' '_-')"
if [ ! -f "$STAMP" ]; then
  echo "sailor-check: installing $PACKAGES into $VENV (PyPI's torch brings its CUDA libraries: several GB)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" || exit 2
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $PACKAGES || { echo "sailor-check: pip install failed" >&2; exit 2; }
  touch "$STAMP"
fi

if [ -z "${SAILOR:-}" ]; then
  SAILOR="$CACHE/sailor"
  if [ ! -d "$SAILOR/.git" ]; then
    git clone -q https://github.com/eth-easl/sailor "$SAILOR" || { echo "sailor-check: cannot clone Sailor; give --sailor PATH" >&2; exit 2; }
  fi
  git -C "$SAILOR" checkout -q "$SAILOR_COMMIT" || exit 2
fi

cargo build -q --release -p amp-cli || exit 2
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ARGS=(--amp target/release/amp --sailor "$SAILOR" --data "$DATA" --work "$WORK" --top "$TOP")
if [ -n "$RESULTS" ]; then ARGS+=(--results "$RESULTS"); fi
"$VENV/bin/python" -W ignore scripts/sailor-check/check.py "${ARGS[@]}"
