#!/usr/bin/env bash
# The test command: formatting, lints and the whole test suite.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# One build cache outside the clone, so a fresh clone (CI) does not rebuild iceberg, arrow and librdkafka.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k2i/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/bootstrap.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked "$@"
