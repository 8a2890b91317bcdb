#!/usr/bin/env bash
# Kafka → Iceberg in one command: builds k2i, starts a local Kafka, produces sample JSON events, ingests them
# into a local Iceberg table with config/quickstart.toml, and reads the table back with DuckDB.
#
#   scripts/quickstart.sh
#
# Running it again appends another batch of events: the table then holds every event produced so far,
# each exactly once. Everything it writes stays in ./quickstart-data (git-ignored); the local stack keeps
# running afterwards (stop it with `scripts/stack.sh down`).
#
# Environment (all optional):
#   K2I_QUICKSTART_RECORDS   events to produce per run (default 5000)
#   K2I_QUICKSTART_PROFILE   cargo profile to build (default release; `dev` builds target/debug)
#   CARGO_TARGET_DIR         build cache (default ~/.cache/k2i/target, shared with scripts/test.sh)
# Developer option:
#   K2I_QUICKSTART_SKIP_BUILD=1   skip scripts/bootstrap.sh and the cargo build and use the binary already
#                                 built for K2I_QUICKSTART_PROFILE (e.g. with K2I_QUICKSTART_PROFILE=dev,
#                                 $CARGO_TARGET_DIR/debug/k2i): the quickstart then runs in seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
started=$SECONDS

TOPIC=quickstart-events
PARTITIONS=4
CONFIG=config/quickstart.toml
DATA="$ROOT/quickstart-data"
RECORDS="${K2I_QUICKSTART_RECORDS:-5000}"
PROFILE="${K2I_QUICKSTART_PROFILE:-release}"
[[ $RECORDS =~ ^[1-9][0-9]*$ ]] || { echo "quickstart: K2I_QUICKSTART_RECORDS must be a positive integer" >&2; exit 2; }

step() { printf '\n== %s\n' "$*"; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

# The same build cache as scripts/test.sh, so a machine that ran the tests does not build everything again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k2i/target}"
# Cargo puts the `dev` profile in target/debug and every other profile in a directory named after it.
case "$PROFILE" in
  dev | test) PROFILE_DIR=debug ;;
  bench) PROFILE_DIR=release ;;
  *) PROFILE_DIR="$PROFILE" ;;
esac
K2I="$CARGO_TARGET_DIR/$PROFILE_DIR/k2i"

if [[ ${K2I_QUICKSTART_SKIP_BUILD:-0} == 1 ]]; then
  step "using the existing $PROFILE_DIR binary (K2I_QUICKSTART_SKIP_BUILD=1)"
  [[ -x $K2I ]] || die "$K2I does not exist; build it or unset K2I_QUICKSTART_SKIP_BUILD"
else
  step "building k2i (cargo profile $PROFILE; the first build takes several minutes)"
  # Installs what a new machine lacks (cmake and the libraries librdkafka links, Java, Maven, python3-venv).
  scripts/bootstrap.sh
  # --locked: build exactly the dependency versions the repository was tested with.
  cargo build --locked -p k2i-cli --profile "$PROFILE"
fi
"$K2I" --version

step "starting the local stack (only its Kafka is used here)"
# Idempotent: returns in about 2 s when the stack is already running.
scripts/stack.sh up
eval "$(scripts/stack.sh env)"

step "creating topic $TOPIC ($PARTITIONS partitions) unless it exists"
# The stack's Kafka does not auto-create topics; --if-not-exists keeps a second run quiet.
scripts/stack.sh kafka-tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$K2I_TEST_KAFKA" \
  --create --if-not-exists --topic "$TOPIC" --partitions "$PARTITIONS"

# The sum of the partitions' end offsets is the number of events produced by earlier runs: new event ids
# continue from there, and after the ingest the table must hold exactly that many plus this run's events.
topic_records() {
  scripts/stack.sh kafka-tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$K2I_TEST_KAFKA" \
    --topic "$TOPIC" | awk -F: '{ n += $NF } END { print n + 0 }'
}
before="$(topic_records)"
expected=$((before + RECORDS))

# An empty topic next to an existing table means the topic was recreated (e.g. `scripts/stack.sh down --purge`):
# the table's recorded offsets belong to the old topic and k2i would rightly refuse to commit new offsets
# below them. The quickstart's table is disposable, so start a fresh one.
if ((before == 0)) && [[ -d $DATA ]]; then
  echo "quickstart: $TOPIC is empty but $DATA holds an earlier table; removing it to start afresh"
  rm -rf -- "$DATA"
fi

step "producing $RECORDS JSON events (event_id $before..$((expected - 1))), keyed by user"
# Each line is `key<TAB>value`; the key (the user) decides the partition, so one user's events stay in order.
python3 - "$before" "$RECORDS" <<'PY' |
import datetime, json, random, sys

first, count = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(first)  # reproducible per run, different across runs
now = datetime.datetime.now(datetime.timezone.utc)
oses = ["android", "ios", "linux", "macos", "windows"]
tags = ["new", "returning", "promo", "mobile", "beta"]
for n in range(first, first + count):
    user = f"user-{rng.randrange(100)}"
    action = rng.choices(["view", "click", "purchase"], weights=[6, 3, 1])[0]
    event = {
        "event_id": n,
        "user": user,
        "action": action,
        # Only purchases have an amount: the column appears with the first purchase (nulls add no column).
        "amount": round(rng.uniform(1, 200), 2) if action == "purchase" else None,
        # RFC 3339 strings stay strings; cast them in queries (`at::timestamptz`).
        "at": (now - datetime.timedelta(seconds=count - (n - first))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "device": {"os": rng.choice(oses), "version": rng.randrange(1, 20)},
        "tags": rng.sample(tags, rng.randrange(0, 3)),
    }
    print(f"{user}\t{json.dumps(event, separators=(',', ':'))}")
PY
  scripts/stack.sh kafka-tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$K2I_TEST_KAFKA" \
    --topic "$TOPIC" --reader-property parse.key=true --reader-property "key.separator=$(printf '\t')" \
    --command-property linger.ms=20 --command-property acks=all

step "ingesting into Iceberg: k2i ingest --config $CONFIG --until-caught-up"
# --until-caught-up reads the high watermarks at start and exits once everything below them is committed;
# without it k2i runs until Ctrl-C. The environment override points k2i at the stack's Kafka (the config's
# default is the same address).
K2I_KAFKA__BOOTSTRAP_SERVERS="$K2I_TEST_KAFKA" "$K2I" ingest --config "$CONFIG" --until-caught-up

step "reading the table back with DuckDB"
# The SQL catalog is a SQLite file in the JDBC-catalog layout, so pyiceberg opens it as it is; DuckDB's
# iceberg_scan reads the current metadata file directly.
CATALOG_PY="from pyiceberg.catalog.sql import SqlCatalog
catalog = SqlCatalog(\"k2i\", uri=\"sqlite:///$DATA/warehouse/catalog.db\", warehouse=\"file://$DATA/warehouse\")
table = catalog.load_table(\"quickstart.events\")"
metadata="$("$K2I_TEST_PYTHON" -c "$CATALOG_PY
print(table.metadata_location)")"
[[ -n $metadata ]] || die "the catalog returned no metadata location for quickstart.events"

# Renders duck.py's JSON rows (standard input) as an aligned table.
show() {
  "$K2I_TEST_PYTHON" -c '
import json, sys
rows = json.load(sys.stdin)
cols = list(rows[0]) if rows else []
cells = [["" if r[c] is None else str(r[c]) for c in cols] for r in rows]
widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
for row in [cols] + cells:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())'
}

BY_ACTION="select action, count(*) as events, count(distinct \"user\") as users, round(sum(amount), 2) as amount
from iceberg_scan('$metadata')
group by all order by all"
COUNT="select count(*) as \"rows\", count(distinct (_kafka_partition, _kafka_offset)) as distinct_records,
       min(event_id) as first_event, max(event_id) as last_event
from iceberg_scan('$metadata')"
printf '%s;\n\n' "$BY_ACTION"
"$K2I_TEST_PYTHON" "$K2I_TEST_DUCK" "$BY_ACTION" | show
printf '\n%s;\n\n' "$COUNT"
count_json="$("$K2I_TEST_PYTHON" "$K2I_TEST_DUCK" "$COUNT")"
show <<<"$count_json"

# Exactly once: every event produced so far is in the table once, no more, no less.
read -r rows distinct < <("$K2I_TEST_PYTHON" -c '
import json, sys
row = json.load(sys.stdin)[0]
print(row["rows"], row["distinct_records"])' <<<"$count_json")
if [[ $rows != "$expected" || $distinct != "$expected" ]]; then
  die "the table holds $rows rows ($distinct distinct records) but $expected events were produced"
fi
printf '\nthe table holds all %s events produced so far, each exactly once\n' "$expected"

printf '\nThe same SQL works in any DuckDB with the iceberg extension (the metadata file changes with every commit).\n'
printf 'The same table in Python with pyiceberg (%s has it):\n\n' "$K2I_TEST_PYTHON"
printf '%s\nprint(table.scan().to_arrow().num_rows)\n' "$CATALOG_PY" | sed 's/^/  /'

cat <<EOF

== next steps (quickstart done in $((SECONDS - started)) s)
- Your own Kafka: copy $CONFIG, set kafka.bootstrap_servers, topic and consumer_group, then run
  $K2I ingest --config <your config>
  It runs until Ctrl-C (SIGINT/SIGTERM), then flushes, commits and exits 0; a restart resumes from the
  offsets recorded in the table.
- Check a configuration first: $K2I validate --config <your config>
- Every key: docs/configuration.md; commands and exit codes: docs/commands.md; how it works: docs/architecture.md
- Run this quickstart again to append more events; stop the local stack with: scripts/stack.sh down
EOF
