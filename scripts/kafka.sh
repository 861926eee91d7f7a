#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A real Apache Kafka 4.x broker (KRaft, one combined broker+controller on
# 127.0.0.1) for the integration suite, from Maven Central jars.
#
#   scripts/kafka.sh start [--dir DIR] [--partitions N]   fetch (cached), format, start, wait, create topics
#   scripts/kafka.sh stop [--dir DIR]                     stop by PID (TERM, KILL after 30 s)
#   scripts/kafka.sh status [--dir DIR]                   running or not, and the bootstrap servers
#   scripts/kafka.sh kill [--dir DIR]                     kill -9 by PID (for fault tests)
#
# DIR (default .kafka/ in the repository) holds the config, the storage, the
# log, the PID file and DIR/bootstrap (HOST:PORT, read by the tests). Starting
# again after a stop reuses the storage and the ports. The jars are cached in
# ~/.cache/execmesh/kafka-<version>/ (EM_KAFKA_CACHE to change).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-}
[ $# -gt 0 ] && shift
dir="$top/.kafka"
partitions=6
heap=${EM_KAFKA_HEAP:-512m}
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    *) echo "kafka.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$top/deploy/kafka/pom.xml")
cache=${EM_KAFKA_CACHE:-$HOME/.cache/execmesh/kafka-$version}
pidfile="$dir/kafka.pid"
topics=(execmesh.requests execmesh.results execmesh.dead execmesh.delay execmesh.cancels)

say() { echo "kafka.sh: $*" >&2; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

fetch() {
  [ -f "$cache/.complete" ] && return 0
  command -v java >/dev/null || { say "java not found (Kafka 4 needs Java 17+)"; exit 3; }
  command -v mvn >/dev/null || { say "mvn not found (the broker's jars come from Maven Central)"; exit 3; }
  say "fetching Apache Kafka $version jars from Maven Central into $cache"
  mkdir -p "$cache/libs"
  (cd "$top/deploy/kafka" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$cache/libs") >&2
  touch "$cache/.complete"
}

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

java_run() { # class, args...
  java -Xmx256m -cp "$cache/libs/*" -Dlog4j2.configurationFile="$top/deploy/kafka/log4j2.properties" \
       -Dkafka.logs.dir="$dir" "$@"
}

configure() {
  [ -f "$dir/server.properties" ] && return 0
  local port cport
  port=$(free_port)
  cport=$(free_port)
  while [ "$cport" = "$port" ]; do cport=$(free_port); done
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=$partitions
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.classic.min.session.timeout.ms=1000
auto.create.topics.enable=false
log.retention.hours=24
log.segment.bytes=268435456
PROPS
  echo "127.0.0.1:$port" >"$dir/bootstrap"
}

format() {
  [ -f "$dir/data/meta.properties" ] && return 0
  local id
  id=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  java_run kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 || {
    cat "$dir/format.log" >&2; say "formatting the storage failed"; exit 1; }
}

# Waits (bounded) until the broker answers a metadata request.
wait_ready() {
  local bootstrap=$1 i
  for ((i = 0; i < 600; i++)); do
    running || { say "the broker exited at start; see $dir/broker.log and $dir/stdout.log"; tail -20 "$dir/stdout.log" >&2; exit 1; }
    if /usr/bin/python3 - "$bootstrap" <<'PY' 2>/dev/null; then return 0; fi
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=1)
sys.exit(0 if md.brokers else 1)
PY
    sleep 0.2 # ok-sleep: poll interval of a bounded wait
  done
  say "the broker did not answer metadata within 120 s; see $dir/broker.log"
  exit 1
}

create_topics() {
  /usr/bin/python3 - "$1" "$partitions" "${topics[@]}" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, parts, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
admin = AdminClient({"bootstrap.servers": bootstrap})
have = admin.list_topics(timeout=10).topics
new = [NewTopic(t, parts, 1) for t in names if t not in have]
for t, f in admin.create_topics(new).items() if new else []:
    f.result(30)
PY
}

case "$cmd" in
  start)
    if running; then say "already running (pid $(cat "$pidfile")) at $(cat "$dir/bootstrap")"; exit 0; fi
    fetch
    configure
    format
    t0=$(date +%s%N)
    setsid java -Xmx"$heap" -Xms128m -XX:+UseSerialGC -cp "$cache/libs/*" \
      -Dlog4j2.configurationFile="$top/deploy/kafka/log4j2.properties" -Dkafka.logs.dir="$dir" \
      kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 < /dev/null &
    echo $! >"$pidfile"
    wait_ready "$(cat "$dir/bootstrap")"
    create_topics "$(cat "$dir/bootstrap")"
    say "started (pid $(cat "$pidfile")) at $(cat "$dir/bootstrap") in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    echo "$(( ($(date +%s%N) - t0) / 1000000 ))" >"$dir/start_ms"
    ;;
  stop|kill)
    if ! running; then say "not running"; rm -f "$pidfile"; exit 0; fi
    pid=$(cat "$pidfile")
    if [ "$cmd" = kill ]; then kill -KILL "$pid"; else kill -TERM "$pid"; fi
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done # ok-sleep: bounded wait for exit
    if kill -0 "$pid" 2>/dev/null; then say "still running after 30 s; kill -9"; kill -KILL "$pid"; fi
    rm -f "$pidfile"
    say "stopped"
    ;;
  status)
    if running; then echo "running pid=$(cat "$pidfile") bootstrap=$(cat "$dir/bootstrap")"; else echo "stopped"; exit 1; fi
    ;;
  *)
    sed -n '3,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
