#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Runs the whole mesh on this machine, on the embedded Kafka default
# (execmesh-devkafka, librdkafka's mock cluster in its own process):
# devkafka, 2 schedulers, 2 executors and 2 sinks on loopback. Installs what
# is missing, builds, starts everything, waits until every replica is
# SERVING, prints the endpoints and a first execmeshctl command, and stops
# everything cleanly on Ctrl-C.
#
#   scripts/run-local.sh [--schedulers N] [--executors N] [--sinks N] [--partitions N]
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
n_sched=2 n_exec=2 n_sink=2 partitions=6
while [ $# -gt 0 ]; do
  case "$1" in
    --schedulers) n_sched=$2; shift 2 ;;
    --executors) n_exec=$2; shift 2 ;;
    --sinks) n_sink=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    -h|--help) sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-local: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

"$top/scripts/deps.sh" --build
build="$top/build"
echo "building in $build ..." >&2
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
bin="$build/services"

run="$top/.run"
rm -rf "$run"
mkdir -p "$run"
pids=()

stop_all() {
  trap - INT TERM EXIT
  echo >&2
  echo "stopping (SIGTERM, each drains) ..." >&2
  # one tier at a time, schedulers first and devkafka last, so each drains
  # while what it depends on is still there
  local tier p
  for tier in scheduler executor sink devkafka; do
    for p in "$run"/"$tier"*.pid; do
      [ -f "$p" ] && kill -TERM "$(cat "$p")" 2>/dev/null || true
    done
    for p in "$run"/"$tier"*.pid; do
      [ -f "$p" ] && wait "$(cat "$p")" 2>/dev/null || true
    done
  done
  echo "stopped; logs are in $run" >&2
}
trap stop_all INT TERM EXIT

# waits (bounded) for a file to exist and be non-empty
wait_file() {
  local f=$1 what=$2 i
  for ((i=0; i<300; i++)); do [ -s "$f" ] && return 0; sleep 0.1; done
  echo "run-local: timed out after 30 s waiting for $what ($f); see $run/*.log" >&2
  exit 1
}

start() { # name, then the command
  local name=$1; shift
  "$@" >"$run/$name.out" 2>"$run/$name.log" &
  pids+=($!)
  echo "$!" >"$run/$name.pid"
}

start devkafka "$bin/devkafka/execmesh-devkafka" --partitions "$partitions" \
  --set grpc.listen=127.0.0.1:0 --set metrics.listen=127.0.0.1:0 \
  --bootstrap-file "$run/bootstrap" --ports-file "$run/devkafka.ports"
wait_file "$run/bootstrap" "devkafka's bootstrap servers"
bootstrap=$(cat "$run/bootstrap")

join() { local IFS=,; echo "$*"; }
sinks=() execs=() scheds=()
for ((i=0; i<n_sink; i++)); do sinks+=("127.0.0.1:$((7300+i))"); done
for ((i=0; i<n_exec; i++)); do execs+=("127.0.0.1:$((7200+i))"); done
for ((i=0; i<n_sched; i++)); do scheds+=("127.0.0.1:$((7100+i))"); done

for ((i=0; i<n_sink; i++)); do
  start "sink-$i" "$bin/sink/execmesh-sink" --set replica="sink-$i" \
    --set grpc.listen="${sinks[$i]}" --set metrics.listen="127.0.0.1:$((9300+i))" \
    --set kafka.bootstrap="$bootstrap" --ports-file "$run/sink-$i.ports"
done
for ((i=0; i<n_exec; i++)); do
  start "executor-$i" "$bin/executor/execmesh-executor" --set replica="executor-$i" \
    --set grpc.listen="${execs[$i]}" --set metrics.listen="127.0.0.1:$((9200+i))" \
    --set sinks.target="ipv4:$(join "${sinks[@]}")" --ports-file "$run/executor-$i.ports"
done
for ((i=0; i<n_sched; i++)); do
  start "scheduler-$i" "$bin/scheduler/execmesh-scheduler" --set replica="scheduler-$i" \
    --set grpc.listen="${scheds[$i]}" --set metrics.listen="127.0.0.1:$((9100+i))" \
    --set kafka.bootstrap="$bootstrap" --set executors.target="ipv4:$(join "${execs[@]}")" \
    --ports-file "$run/scheduler-$i.ports"
done

ctl="$bin/ctl/execmeshctl"
all="ipv4:$(join "${scheds[@]}" "${execs[@]}" "${sinks[@]}")"
for ((i=0; i<300; i++)); do
  "$ctl" health --target "$all" >/dev/null 2>&1 && break
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "run-local: a process exited at start; see $run/*.log" >&2; exit 1; }
  done
  sleep 0.1
done
"$ctl" health --target "$all" >"$run/health.txt" 2>&1 || {
  cat "$run/health.txt" >&2; echo "run-local: not every replica became SERVING within 30 s; see $run/*.log" >&2; exit 1; }

cat <<MSG

execmesh is running (Kafka: execmesh-devkafka at $bootstrap, $partitions partitions per topic)

  Submit (gRPC, execmesh.v1.Scheduler):  $(join "${scheds[@]}")
  executors (execmesh.v1.Executor):      $(join "${execs[@]}")
  result sinks (execmesh.v1.ResultSink): $(join "${sinks[@]}")
  health: grpc.health.v1.Health on every port above
  metrics: http://127.0.0.1:9100/metrics ... (schedulers 91xx, executors 92xx, sinks 93xx)
  logs: $run/*.log

A first execution (prints its result from the execmesh.results topic):

  $ctl submit --target ipv4:$(join "${scheds[@]}") --bootstrap $bootstrap --handler echo --payload 'hello, execmesh'

Health of every replica:

  $ctl health --target $all

Ctrl-C stops everything.
MSG

wait "${pids[0]}"
