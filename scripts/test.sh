#!/usr/bin/env bash
# The test command: formatting, lints, the whole test suite against the real local stack, and the quickstart.
# Usage: scripts/test.sh [extra cargo test args]
#
# Starts the stack (scripts/stack.sh up) if it is not running and stops it again at the end; a stack that
# was already running is left running. Ends with one line "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."

# One build cache outside the clone, so a fresh clone (CI) does not rebuild iceberg, arrow and librdkafka.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k2i/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/bootstrap.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== local stack"
started_stack=false
if scripts/stack.sh status >/dev/null 2>&1; then
  echo "stack already running; leaving it running"
else
  scripts/stack.sh up
  started_stack=true
  # Also on an early exit (a failed build): never leave the servers running.
  trap 'scripts/stack.sh down' EXIT
fi
eval "$(scripts/stack.sh env)"

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
log="$CARGO_TARGET_DIR/test-output.log"
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# The README's first command must keep working: run it with the binary the tests just built.
echo "== quickstart (dev build)"
quickstart_failed=0
if K2I_QUICKSTART_SKIP_BUILD=1 K2I_QUICKSTART_PROFILE=dev scripts/quickstart.sh > "$CARGO_TARGET_DIR/quickstart.log" 2>&1; then
  tail -3 "$CARGO_TARGET_DIR/quickstart.log"
else
  tail -40 "$CARGO_TARGET_DIR/quickstart.log"
  echo "quickstart failed" >&2
  quickstart_failed=1
  status=1
fi

if $started_stack; then
  trap - EXIT
  scripts/stack.sh down
fi

passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
failed=$((failed + quickstart_failed))
echo "tests: $passed passed, $failed failed"
exit "$status"
