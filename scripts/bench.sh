#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The benchmark (tests/bench/bench.py): in one run on one machine, the Kafka
# pass-through bound (consume -> produce -> commit, no gRPC), the mesh closed
# loop (N pre-filled executions through 1/1/1 and 2/2/2 replicas, every
# result checked), the mesh open loop (a coordinated-omission-free generator
# at 1,000/s and at half the closed-loop maximum: p50/p99/p999/max), CPU
# seconds per execution and peak RSS. Ends with one line
#   RESULT passthrough_per_min=P e2e_per_min=E ratio=E/P p50_ms=.. p99_ms=.. ...
# and exits non-zero when an execution was lost.
#
#   scripts/bench.sh                 2,000,000 executions on devkafka
#   scripts/bench.sh --quick         300,000 and short open-loop phases (CI; a few minutes)
#   Also the 1/1/1 mesh with mutual TLS on every gRPC hop (tls_ratio beside ratio; --skip-tls omits it).
#   scripts/bench.sh --kafka real    on a real broker (scripts/kafka.sh), started for the run
#   --count N, --build DIR (default build-bench/, an optimised build without sanitizers),
#   --prefetch-kb N (the schedulers' kafka.queued_max_kbytes), --skip-222, --skip-open-loop,
#   --set ROLE:KEY=VALUE (a setting of the throughput profile, repeatable),
#   --open-loop-rates R1,R2,... (more open-loop rates after the two: a latency-vs-rate sweep),
#   --generator-linger MS (the open-loop generator's linger.ms, default 0)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build-bench"
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --quick|--skip-222|--skip-open-loop|--skip-tls) pass+=("$1"); shift ;;
    --kafka|--count|--open-loop-s|--open-loop-rates|--generator-linger|--prefetch-kb|--set) pass+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '3,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

"$top/scripts/deps.sh"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEM_UNIT_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
export EM_BUILD_DIR="$build"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
exec /usr/bin/python3 "$top/tests/bench/bench.py" "${pass[@]}"
