#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, two at a time.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Crashes land in fuzz/artifacts/TARGET/; the log of each run in
# fuzz/logs/TARGET.log (its last `#N DONE` line gives the executions).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p logs
# Built once: sanitizer off (safe Rust; speed), debug assertions on so that
# integer overflow is a crash.
cargo +nightly fuzz build -s none -a
run() {
  local t=$1
  mkdir -p "corpus/$t" "artifacts/$t"
  # A scratch copy of the seeds grows during the run; the committed
  # corpus/ stays small.
  local work="work/$t"
  mkdir -p "$work"
  cargo +nightly fuzz run -s none -a "$t" "$work" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    >"logs/$t.log" 2>&1 || echo "$t: FAILED (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
  grep -E '^#[0-9]+ +DONE' "logs/$t.log" | tail -1 | sed "s/^/$t: /" || true
}
i=0
for t in "${targets[@]}"; do
  run "$t" &
  i=$((i + 1))
  if [ $((i % 2)) -eq 0 ]; then wait; fi
done
wait
