#!/usr/bin/env bash
# Kafka Streams (the version in pom.xml) as a reference for Tidemark's windows, used by
# tests/integration/operators/test_kafka_streams_reference.py.
#
#   devstack/streams-reference/reference.sh build   fetch the jars with Maven, compile (cached)
#   devstack/streams-reference/reference.sh run     build if needed, then run the harness on
#                                                   stdin (protocol: StreamsReference.java)
#
# Cached like devstack/stack.sh caches Kafka: the jars in .devstack/streams-reference/lib,
# keyed by the hash of pom.xml; the classes in .devstack/streams-reference/classes, keyed by
# the hash of pom.xml and the source. A run with both current starts the JVM at once.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$ROOT/.devstack/streams-reference"
SRC="$HERE/src/main/java/dev/tidemark/reference/StreamsReference.java"
MAIN="dev.tidemark.reference.StreamsReference"

log() { printf 'streams-reference: %s\n' "$*" >&2; }

# Each step builds beside its target and renames it into place, so an interrupted build
# leaves nothing that looks current.
fetch_jars() {
  local stamp="$OUT/lib/.pom.sha" want
  want="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  log "fetching Kafka Streams artifacts with Maven"
  local tmp="$OUT/lib.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp"
  echo "$want" >"$tmp/.pom.sha"
  rm -rf "$OUT/lib" && mv "$tmp" "$OUT/lib"
}

compile() {
  local stamp="$OUT/classes/.sha" want
  want="$(cat "$HERE/pom.xml" "$SRC" | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  log "compiling the harness"
  local tmp="$OUT/classes.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  javac --release 17 -encoding UTF-8 -cp "$OUT/lib/*" -d "$tmp" "$SRC"
  echo "$want" >"$tmp/.sha"
  rm -rf "$OUT/classes" && mv "$tmp" "$OUT/classes"
}

build() {
  mkdir -p "$OUT"
  fetch_jars
  compile
}

case "${1:-}" in
  build) build ;;
  run)
    build
    # Short-lived and small: the client compiler and a serial collector start fastest.
    exec java -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
      -cp "$OUT/classes:$OUT/lib/*" "$MAIN"
    ;;
  *) echo "usage: $0 build|run" >&2; exit 64 ;;
esac
