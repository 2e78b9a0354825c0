#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for at most SECONDS each
# (default 60), two at a time; RUNS=N stops each target after N executions.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   fuzz/run.sh 60                       # a minute per target
#   RUNS=1000000 fuzz/run.sh 3600        # a million executions per target
#   fuzz/run.sh 30 plan_json hf_config   # some targets
#
# MAX_LEN=N bounds the input size (default 65536).
#
# Crashes, hangs and out-of-memory inputs land in fuzz/artifacts/TARGET/;
# each run's log in fuzz/logs/TARGET.log, whose `Done N runs` line gives the
# executions. The seeds in fuzz/corpus/ stay as committed: a run grows a
# scratch corpus in fuzz/work/.
set -euo pipefail
cd "$(dirname "$0")"
export SECS="${1:-60}"
shift || true
export RUNS="${RUNS:--1}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p logs
# Sanitizer off (safe Rust; speed), debug assertions on so that integer
# overflow is a crash.
cargo +nightly fuzz build -s none -a
run() {
  local t=$1
  mkdir -p "corpus/$t" "artifacts/$t" "work/$t"
  local len="${MAX_LEN:-65536}"
  # A shorthand is a short string, and an unknown name in one is matched
  # against every catalog name (edit distance, quadratic in its length):
  # long inputs only slow the target down.
  if [ "$t" = cluster_shorthand ]; then len=256; fi
  # The binary built above, run directly: editing the sources during a
  # long run does not rebuild (and so change) the target under test.
  if "target/x86_64-unknown-linux-gnu/release/$t" -artifact_prefix="artifacts/$t/" \
    "work/$t" "corpus/$t" -max_total_time="$SECS" -runs="$RUNS" -rss_limit_mb=2048 -timeout=10 \
    -max_len="$len" >"logs/$t.log" 2>&1; then
    echo "$t: ok, $(grep -E '^Done [0-9]+ runs' "logs/$t.log" | tail -1)"
  else
    echo "$t: FAILED (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
  fi
}
export -f run
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'run {}'
