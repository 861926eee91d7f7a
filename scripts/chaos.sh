#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The chaos harness (tests/chaos/chaos.py; ../shared/reliability-matrix.md):
# a mesh under load while every kind of fault is applied and healed, then a
# full read of the results topic. Prints a `GOAL FAILED goal: figure (detail)`
# line per goal missed and ends with one line
#   RESULT executions=N faults=F lost=L duplicates=D ... lag_end=N ... goals_failed=...
# It exits non-zero on loss, on duplicates or failed Submits on a clean path
# (drains, NOT_SERVING, scale-out/in, the scheduler churn), on a replica that
# exited other than by a drain or the harness's kill -9, on the schedulers'
# lag not back to 0 (16 s after the load stopped; after the churn; after a
# cold start), on a fault not shown to take effect; the long mode also on a
# timing goal missed (reroute, out of picks, takeover), which --quick reports.
#
#   scripts/chaos.sh --quick                 each fault kind once, on devkafka (CI)
#   scripts/chaos.sh                         long mode: every fault 3 times, seeded schedule
#   scripts/chaos.sh --kafka real [--quick]  on a real broker (scripts/kafka.sh), restarted for broker faults
#   scripts/chaos.sh --negative [--quick]    negative control: a sink built to ack before Kafka's delivery
#                                            report is killed mid-flight; passes only if the harness
#                                            reports lost > 0 and exits non-zero
#   --build DIR (default build/), --rate N, --seed N, --rounds N, --only kind,kind,
#   --burst N (executions produced at once as the scheduler churn starts)
# Needs root (executor-2 runs on a host of its own: a network namespace on a
# test-made bridge, tests/integration/hosts.py; removed at the end).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build"
kafka=dev
negative=0
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --kafka) kafka=$2; shift 2 ;;
    --negative) negative=1; shift ;;
    --quick) pass+=(--quick); shift ;;
    --rate|--seed|--rounds|--only|--partitions|--burst) pass+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "chaos.sh: needs root for the network namespace" >&2; exit 2; }

"$top/scripts/deps.sh"
if [ ! -x "$build/services/scheduler/execmesh-scheduler" ]; then
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
fi
export EM_BUILD_DIR="$build"

kargs=()
if [ "$kafka" = real ]; then
  kdir="$build/chaos-kafka"
  "$top/scripts/kafka.sh" stop --dir "$kdir" >/dev/null 2>&1 || true
  rm -rf "$kdir"
  trap '"$top/scripts/kafka.sh" stop --dir "$kdir" >/dev/null 2>&1 || true' EXIT
  "$top/scripts/kafka.sh" start --dir "$kdir" --partitions 12
  kargs=(--kafka real --bootstrap-file "$kdir/bootstrap" --kafka-dir "$kdir")
fi

if [ "$negative" = 1 ]; then
  early="$build/services/sink/execmesh-sink-early-ack"
  if [ ! -x "$early" ]; then  # a build of its own, so the build under test stays as it is
    nb="$build-early-ack"
    cmake -S "$top" -B "$nb" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEM_TEST_EARLY_ACK=ON -DEM_UNIT_TESTS=OFF >/dev/null
    cmake --build "$nb" -j"$(nproc)" --target execmesh-sink-early-ack >/dev/null
    early="$nb/services/sink/execmesh-sink-early-ack"
  fi
  out=$(mktemp)
  rc=0
  # sink-0 acks early and holds results 1 s in its producer queue, then is killed
  /usr/bin/python3 "$top/tests/chaos/chaos.py" "${pass[@]}" "${kargs[@]}" --only kill9_sink \
    --sink-bin "$early" --sink-arg=--set --sink-arg=kafka.linger_ms=1000 \
    | tee "$out" || rc=$?
  lost=$(sed -n 's/^RESULT .* lost=\([0-9]*\) .*/\1/p' "$out")
  rm -f "$out"
  if [ "$rc" -ne 0 ] && [ "${lost:-0}" -gt 0 ]; then
    echo "RESULT negative_control=pass lost=$lost harness_exit=$rc"
    exit 0
  fi
  echo "RESULT negative_control=FAIL lost=${lost:-?} harness_exit=$rc (the harness did not catch a broken ack chain)"
  exit 1
fi

rc=0
/usr/bin/python3 "$top/tests/chaos/chaos.py" "${pass[@]}" "${kargs[@]}" || rc=$?
exit $rc  # (not exec: the EXIT trap stops the real broker)
