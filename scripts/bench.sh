#!/usr/bin/env bash
# Throughput and memory benchmark of k2i against the physical limit, measured in the same run.
#
#   scripts/bench.sh                         # 1,000,000 JSON records (10 mixed fields) over 8 partitions
#   scripts/bench.sh --shape raw --records 300000        # 1 KiB opaque values
#   scripts/bench.sh --shape avro            # Confluent Avro: the 10-field event of --shape protobuf, same values
#   scripts/bench.sh --shape json-schema     # Confluent JSON Schema: the same event as JSON text
#   scripts/bench.sh formats                 # protobuf, avro and json-schema side by side (MiB/s per core, ratio)
#   scripts/bench.sh formats --records 300000 --shapes avro,json-schema
#   scripts/bench.sh --help                  # every option of k2i-bench
#   scripts/bench.sh commit-history          # commit latency at 10 vs 20,000 snapshots (issue 9, B.7)
#   scripts/bench.sh freshness               # produce → visible via the read-state RPC vs Iceberg; hot-row scans
#
# Builds k2i and k2i-bench in release mode, starts the local stack if needed (and stops it afterwards),
# preloads a fresh topic, then measures (a) a plain librdkafka consumer that only counts bytes and (b)
# `k2i ingest --until-caught-up` (records/s, MB/s, CPU seconds, peak RSS, snapshots, files). It prints the
# ratio (b)/(a) and RSS against the buffer cap as a table, and writes JSON to target/bench/.
# `commit-history` instead times k2i commits (and k2i's fencing decision alone) on a SQLite-catalog table with
# a small history and with a synthesised long one, in process (no Kafka needed), and prints the ratios; see
# docs/operations.md, "Benchmark". `formats` runs the throughput benchmark once per registry format (Protobuf,
# Avro, JSON Schema: the same event and values) on the same record count, each against the raw consume of its
# own topic, and prints them side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k2i/target}"

scripts/bootstrap.sh
cargo build --release --locked -p k2i-cli --bins
if ! scripts/stack.sh status >/dev/null 2>&1; then
  scripts/stack.sh up
  trap 'scripts/stack.sh down' EXIT
fi
eval "$(scripts/stack.sh env)"
"$CARGO_TARGET_DIR/release/k2i-bench" --k2i "$CARGO_TARGET_DIR/release/k2i" --out target/bench "$@"
