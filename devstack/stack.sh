#!/usr/bin/env bash
# Real local services on loopback without Docker: the Apache Kafka broker (KRaft, one node)
# and FerretDB 1.x on SQLite as the MongoDB-protocol server.
#
#   devstack/stack.sh install   fetch Kafka jars and build FerretDB (cached)
#   devstack/stack.sh up        start what is not running, wait until healthy, write .devstack/env
#   devstack/stack.sh down      stop both
#   devstack/stack.sh reset     stop both and wipe their data
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$ROOT/.devstack"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tidemark"
KAFKA_PORT="${TIDEMARK_KAFKA_PORT:-19092}"
CONTROLLER_PORT=$((KAFKA_PORT + 1))
MONGO_PORT="${TIDEMARK_MONGO_PORT:-27117}"
FERRETDB_VERSION="v1.24.2"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
START_TIMEOUT="${TIDEMARK_START_TIMEOUT:-120}"

log() { printf 'devstack: %s\n' "$*" >&2; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A service started by another checkout on this machine already holds the port: reuse it.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_kafka() {
  local stamp="$DEV/kafka/lib/.pom.sha"
  local want
  want="$(sha256sum "$ROOT/devstack/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  log "fetching Kafka artifacts with Maven"
  rm -rf "$DEV/kafka/lib"
  mkdir -p "$DEV/kafka/lib"
  mvn -q -B -f "$ROOT/devstack/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$DEV/kafka/lib"
  echo "$want" >"$stamp"
}

install_ferretdb() {
  local patches
  patches="$(sha256sum "$ROOT/devstack/ferretdb/tidemark.patch" | cut -c1-12)"
  local bin="$CACHE/ferretdb-$FERRETDB_VERSION-$patches"
  if [[ ! -x "$bin" ]]; then
    # `go install ...@version` asks the module proxy for the module's version list, which it
    # refuses for FerretDB, and a plain build panics at start because the module zip lacks the
    # generated build/version/version.txt. So: vendor the pinned go.mod/go.sum, add that
    # file, apply devstack/ferretdb/tidemark.patch (performance fixes, see the patch) and
    # build from the vendor tree.
    log "building FerretDB $FERRETDB_VERSION (about two minutes the first time)"
    local src="$CACHE/ferretdb-src"
    local tree="$src/vendor/github.com/FerretDB/FerretDB"
    rm -rf "$src" && mkdir -p "$src"
    cp "$ROOT"/devstack/ferretdb/{go.mod,go.sum,tools.go} "$src/"
    (cd "$src" && go mod vendor)
    echo "$FERRETDB_VERSION" >"$tree/build/version/version.txt"
    patch -s -p1 -d "$tree" <"$ROOT/devstack/ferretdb/tidemark.patch"
    (cd "$src" && CGO_ENABLED=0 go build -mod=vendor -trimpath -o "$bin.tmp" \
      github.com/FerretDB/FerretDB/cmd/ferretdb)
    mv "$bin.tmp" "$bin"
    rm -rf "$src"
  fi
  mkdir -p "$DEV/bin"
  ln -sf "$bin" "$DEV/bin/ferretdb"
}

kafka_config() {
  local dir="$DEV/kafka"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Fast failure detection and hung-transaction cleanup, so crash tests recover in seconds.
group.min.session.timeout.ms=1000
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
log.flush.interval.messages=9223372036854775807
EOF
  cat >"$dir/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$DEV/logs/kafka-server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
EOF
}

start_kafka() {
  local dir="$DEV/kafka" pidf="$DEV/kafka.pid"
  if alive "$pidf" || listening "$KAFKA_PORT"; then return; fi
  mkdir -p "$dir" "$DEV/logs"
  kafka_config
  local cp="$dir/lib/*"
  local java=(java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$cp")
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    log "formatting KRaft storage"
    "${java[@]}" kafka.tools.StorageTool format --ignore-formatted \
      -t "$("${java[@]}" kafka.tools.StorageTool random-uuid)" \
      -c "$dir/server.properties" >>"$DEV/logs/kafka.log" 2>&1
  fi
  log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
  nohup "${java[@]}" kafka.Kafka "$dir/server.properties" >>"$DEV/logs/kafka.log" 2>&1 &
  echo $! >"$pidf"
}

start_ferretdb() {
  local pidf="$DEV/ferretdb.pid"
  if alive "$pidf" || listening "$MONGO_PORT"; then return; fi
  mkdir -p "$DEV/ferretdb/data" "$DEV/logs"
  log "starting FerretDB on 127.0.0.1:$MONGO_PORT"
  nohup "$DEV/bin/ferretdb" --listen-addr="127.0.0.1:$MONGO_PORT" --handler=sqlite \
    --sqlite-url="file:$DEV/ferretdb/data/" --state-dir="$DEV/ferretdb" \
    --telemetry=disable --debug-addr=- --log-level=WARN \
    >>"$DEV/logs/ferretdb.log" 2>&1 &
  echo $! >"$pidf"
}

wait_healthy() {
  if ! "$PYTHON" "$ROOT/devstack/health.py" --timeout "$START_TIMEOUT" \
    --kafka "127.0.0.1:$KAFKA_PORT" --mongo "mongodb://127.0.0.1:$MONGO_PORT"; then
    for f in kafka.log kafka-server.log ferretdb.log; do
      [[ -f "$DEV/logs/$f" ]] && { log "tail of $f:"; tail -n 30 "$DEV/logs/$f" >&2; }
    done
    exit 1
  fi
  printf 'KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:%s\nMONGO_URI=mongodb://127.0.0.1:%s\n' \
    "$KAFKA_PORT" "$MONGO_PORT" >"$DEV/env"
}

stop() {
  local name pidf
  for name in kafka ferretdb; do
    pidf="$DEV/$name.pid"
    if alive "$pidf"; then
      log "stopping $name"
      kill "$(cat "$pidf")"
      for _ in $(seq 1 60); do alive "$pidf" || break; sleep 0.5; done
      alive "$pidf" && kill -9 "$(cat "$pidf")"
    fi
    rm -f "$pidf"
  done
  rm -f "$DEV/env"
}

case "${1:-}" in
  install) install_kafka; install_ferretdb ;;
  up) install_kafka; install_ferretdb; start_kafka; start_ferretdb; wait_healthy ;;
  down) stop ;;
  reset) stop; rm -rf "$DEV/kafka/data" "$DEV/ferretdb" "$DEV/logs" ;;
  *) echo "usage: $0 install|up|down|reset" >&2; exit 64 ;;
esac
