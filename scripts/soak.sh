#!/usr/bin/env bash
# Crash soak: kill -9 a running `k2i ingest` N times at random moments during a large ingest, then catch up
# and check that every record is in the table exactly once and no data file is left unreferenced.
#
#   scripts/soak.sh [N] [RECORDS]      (defaults: 50 kills, 200000 records over 8 partitions)
#
# It runs the suite's random-kill test with more kills; the seed is printed, and K2I_KILL_SEED=<seed>
# replays a run. Starts the local stack if it is not running (and stops it again afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k2i/target}"
export K2I_KILLS="${1:-50}"
export K2I_KILL_RECORDS="${2:-200000}"

if ! scripts/stack.sh status >/dev/null 2>&1; then
  scripts/stack.sh up
  trap 'scripts/stack.sh down' EXIT
fi
eval "$(scripts/stack.sh env)"
cargo test --locked -p k2i-cli --test crash random_kill_9_during_ingest_never_loses_or_duplicates -- --nocapture
