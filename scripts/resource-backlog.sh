#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Memory with a backlog waiting for a throttled resource (tests/bench/resource_backlog.py):
# N executions of handler `sleep` (payload "5") in the requests topic, then 1 sink,
# 1 executor and 1 scheduler whose config limits `sleep` to resource db:slow
# (concurrency 4, 50 per 1000 ms, burst 4), the rest of bench.py's throughput profile.
# Every 5 s for --observe-s: VmRSS/VmHWM of scheduler, executor and sink, the
# resource's waiting/running/admitted, held partitions, pending, the group's lag.
# Then (--compare-s S, 0 skips) the same backlog through a scheduler without the
# resource (its own group, no second fill): its RSS after S s at full speed. Ends with
#   RESULT backlog=N scheduler_rss_mb=.. scheduler_hwm_mb=.. executor_rss_mb=.. ...
# and exits non-zero when more was admitted than burst + rate x time, a HWM passed
# --max-hwm-mb, or the backlog was not in Kafka (lag_left < N - admitted - slack).
#
#   scripts/resource-backlog.sh                       1,000,000 on a real broker (scripts/kafka.sh)
#   --count N (1000000), --kafka real|dev (real), --observe-s S (60), --compare-s S (30),
#   --build DIR (build-bench/, built like bench.sh does when DIR is a build of this tree;
#     another tree's build, e.g. /tmp/wt/build, is used as it is), --no-build,
#   --partitions P (64, the requests topic), --rate R (50), --concurrency C (4), --burst B (4),
#   --max-waiting M (the scheduler's default 64), --max-hwm-mb MB (512),
#   --fill python|bench-fill (python: payload "5" by confluent_kafka; em-bench-fill writes
#     the handler but a payload of letters, which sleep refuses: FAILED, then retried),
#   --set ROLE:KEY=VALUE (a setting of the throughput profile, repeatable, e.g.
#     scheduler:kafka.poll_batch=1000), --keep (keep the logs folder, else kept only on failure)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build-bench"
kafka=real
build_it=1
keep=0
rate=50
concurrency=4
burst=4
max_waiting=
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --no-build) build_it=0; shift ;;
    --kafka) kafka=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --burst) burst=$2; shift 2 ;;
    --max-waiting) max_waiting=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --count|--observe-s|--compare-s|--partitions|--max-hwm-mb|--fill|--set) pass+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '3,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "resource-backlog.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$kafka" in real|dev) ;; *) echo "resource-backlog.sh: --kafka real|dev" >&2; exit 2 ;; esac
build=$(mkdir -p "$build" && cd "$build" && pwd)

# Build as bench.sh does, but only a build of this tree: another tree's build is used as it is.
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
if [ "$build_it" = 1 ] && { [ -z "$src" ] || [ "$src" = "$top" ]; }; then
  "$top/scripts/deps.sh"
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEM_UNIT_TESTS=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
elif [ -n "$src" ] && [ "$src" != "$top" ]; then
  echo "resource-backlog.sh: $build is a build of $src: used as it is" >&2
fi
sched="$build/services/scheduler/execmesh-scheduler"
for b in "$sched" "$build/services/executor/execmesh-executor" "$build/services/sink/execmesh-sink"; do
  [ -x "$b" ] || { echo "resource-backlog.sh: $b missing" >&2; exit 2; }
done
if grep -q 'EM_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "resource-backlog.sh: warning: $build is a sanitizer build (RSS figures are not representative)" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/resource-backlog.XXXXXX")
py_pid=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
    kill -TERM "$py_pid" 2>/dev/null || true
    for ((i = 0; i < 900; i++)); do kill -0 "$py_pid" 2>/dev/null || break; sleep 0.1; done # ok-sleep: bounded wait for its exit (it stops the mesh)
  fi
  # Backstop: a mesh process of this run still alive (its command line names this folder): TERM, by PID.
  for f in "$tmp"/runs/*/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$tmp/"; then
      echo "resource-backlog.sh: stopping leftover pid $p ($(basename "$f" .pid))" >&2
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  if [ "$kafka" = real ] && [ -d "$tmp/kafka" ]; then
    "$top/scripts/kafka.sh" stop --dir "$tmp/kafka" >/dev/null 2>&1 || true
    rm -rf "$tmp/kafka/data"
  fi
  if [ "$keep" = 1 ] || [ "$rc" != 0 ]; then
    echo "resource-backlog.sh: logs kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cfg="$tmp/resources.cfg"
{
  echo "resources = { slow = { name = \"db:slow\"; concurrency = $concurrency; rate = $rate; per_ms = 1000; burst = $burst;${max_waiting:+ max_waiting = $max_waiting;} }; };"
  echo 'handlers = { sleep = { resources = [ "db:slow" ]; }; };'
} >"$cfg"
if ! "$sched" --config "$cfg" --check-config >"$tmp/check-config.log" 2>&1; then
  echo "resource-backlog.sh: $sched refuses the resources config (a scheduler without resources?):" >&2
  cat "$tmp/check-config.log" >&2
  exit 2
fi

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); build $build"
echo "resources config: $(tr '\n' ' ' <"$cfg")"
kargs=()
if [ "$kafka" = real ]; then
  "$top/scripts/kafka.sh" start --dir "$tmp/kafka" --partitions 6
  kargs=(--kafka-dir "$tmp/kafka")
fi

export EM_BUILD_DIR="$build" EM_TEST_DIR="$tmp/runs" EM_KAFKA="$kafka"
/usr/bin/python3 "$top/tests/bench/resource_backlog.py" --kafka "$kafka" "${kargs[@]}" --config "$cfg" \
  --rate "$rate" --burst "$burst" --max-waiting "${max_waiting:-64}" "${pass[@]}" &
py_pid=$!
rc=0
wait "$py_pid" || rc=$?
py_pid=
exit "$rc"
