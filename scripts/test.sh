#!/usr/bin/env bash
# The test command: formatting, lints and the whole test suite against the real local stack.
# Usage: scripts/test.sh [extra cargo test args]
#
# Starts the stack (scripts/stack.sh up) if it is not running and stops it again at the end; a stack that
# was already running is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build cache outside the clone, so a fresh clone (CI) does not rebuild iceberg, arrow and librdkafka.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k2i/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/bootstrap.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== local stack"
if scripts/stack.sh status >/dev/null 2>&1; then
  echo "stack already running; leaving it running"
else
  scripts/stack.sh up
  trap 'scripts/stack.sh down' EXIT
fi
eval "$(scripts/stack.sh env)"

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast "$@"

# The README's first command must keep working: run it with the binary the tests just built.
echo "== quickstart (dev build)"
K2I_QUICKSTART_SKIP_BUILD=1 K2I_QUICKSTART_PROFILE=dev scripts/quickstart.sh > "$CARGO_TARGET_DIR/quickstart.log" 2>&1 \
  || { tail -40 "$CARGO_TARGET_DIR/quickstart.log"; echo "quickstart failed" >&2; exit 1; }
tail -3 "$CARGO_TARGET_DIR/quickstart.log"
