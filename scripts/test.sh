#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs what is missing, builds, and runs the whole test suite: the cmocka
# unit tests and the integration tests (real processes over TCP), once on
# devkafka and once on a real Apache Kafka broker (scripts/kafka.sh) when
# Java and Maven are present; it says so when it has to skip the real broker.
# Then the chaos harness in its CI mode (scripts/chaos.sh --quick) and its
# negative control. Everything is built with AddressSanitizer + UBSan and
# -Werror; the suite
# fails if any sanitizer report file exists at the end. Then the fuzz targets
# in their CI mode (scripts/fuzz.sh --ci: clang, its own build; run alone, or
# with -R fuzz). Last, the benchmark
# in its CI mode (scripts/bench.sh --quick, its own optimised build): it fails
# the suite if an execution was lost; its figures are printed, not asserted.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -R PATTERN      only the tests whose ctest names match (e.g. -R unit, -R failover)
#   scripts/test.sh --no-sanitize   a plain build (faster; CI always sanitizes)
#   scripts/test.sh -j N            run N tests at once (default 1: the machine has 2 cores)
#   scripts/test.sh --no-bench      skip the benchmark (it also runs only without -R, or with -R bench)
#   scripts/test.sh --long          the integration tests' full counts (e.g. 100,000 executions through
#                                   the scheduler churn, 10 cold starts) instead of the bounded CI counts
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
pattern=""
sanitize=ON
jobs=1
bench=yes
long=OFF
while [ $# -gt 0 ]; do
  case "$1" in
    -R) pattern=$2; shift 2 ;;
    --no-sanitize) sanitize=OFF; shift ;;
    --no-bench) bench=no; shift ;;
    --long) long=ON; shift ;;
    -j) jobs=$2; shift 2 ;;
    -h|--help) sed -n '3,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
"$top/scripts/deps.sh"

if [ "$sanitize" = ON ]; then build="$top/build-test"; else build="$top/build-test-plain"; fi
mkdir -p "$build"

# The real broker, when this machine can run it.
kafkas="devkafka"
kdir="$build/kafka"
stop_kafka() { "$top/scripts/kafka.sh" stop --dir "$kdir" >/dev/null 2>&1 || true; }
if command -v java >/dev/null && command -v mvn >/dev/null; then
  stop_kafka
  rm -rf "$kdir"
  trap stop_kafka EXIT
  echo "== real Kafka broker (scripts/kafka.sh)" >&2
  if "$top/scripts/kafka.sh" start --dir "$kdir" --partitions 6; then
    kafkas="devkafka;realkafka"
    echo "   broker up at $(cat "$kdir/bootstrap") in $(cat "$kdir/start_ms") ms" >&2
  else
    echo "== FAILED to start the real Kafka broker although Java and Maven are here (see $kdir)" >&2
    exit 1
  fi
else
  echo "== SKIPPING the real Kafka broker: $(command -v java >/dev/null || echo 'java') $(command -v mvn >/dev/null || echo 'mvn') not on PATH;" >&2
  echo "   the integration tests run on devkafka only" >&2
fi

echo "== build ($build, sanitizers $sanitize)" >&2
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEM_WERROR=ON -DEM_SANITIZE="$sanitize" -DEM_TEST_EARLY_ACK=ON -DEM_DEBUG_HOOKS=ON -DEM_LONG_TESTS="$long" \
      -DEM_KAFKAS="$kafkas" -DEM_KAFKA_BOOTSTRAP_FILE="$kdir/bootstrap" >/dev/null
cmake --build "$build" -j"$(nproc)" 2>&1 | grep -E 'error|warning|Error' >&2 || true
cmake --build "$build" -j"$(nproc)" >/dev/null

runs="$build/test-runs"
rm -rf "$runs"
mkdir -p "$runs"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

echo "== tests" >&2
args=(--output-on-failure --timeout 900 -j "$jobs")
[ -n "$pattern" ] && args+=(-R "$pattern")
rc=0
(cd "$build" && ctest "${args[@]}") || rc=$?
# the figures the tests print (one line each: E2E, FAILOVER, BROKER_RESTART, ...), from the
# full test output (kept: the next ctest call would overwrite LastTest.log)
cp "$build/Testing/Temporary/LastTest.log" "$runs/ctest-output.log" 2>/dev/null || true
grep -E '^[A-Z][A-Z0-9_]+ [a-z][a-z0-9_]*[ =]' "$runs/ctest-output.log" 2>/dev/null | sed 's/^/   /' >&2 || true
for k in devkafka realkafka; do
  n=$(cd "$build" && ctest -N -R "integration\.$k\." 2>/dev/null | sed -n 's/^Total Tests: //p')
  echo "== integration tests on $k: ${n:-0}" >&2
done

if [ -z "$pattern" ] || [[ fuzz =~ $pattern ]]; then
  stop_kafka  # not needed any more: give the fuzzers the machine
  echo "== fuzz targets, CI mode (scripts/fuzz.sh --ci)" >&2
  if ! "$top/scripts/fuzz.sh" --ci; then
    echo "== the fuzz stage FAILED (a crash, a broken check, coverage below a floor, or the planted bug not found)" >&2
    rc=1
  fi
fi

if [ "$bench" = yes ] && { [ -z "$pattern" ] || [[ bench =~ $pattern ]]; }; then
  stop_kafka  # the real broker is not needed any more: give the benchmark the machine
  echo "== benchmark, CI mode (scripts/bench.sh --quick)" >&2
  if ! "$top/scripts/bench.sh" --quick; then
    echo "== the benchmark FAILED (an execution lost, or fewer results checked than sent)" >&2
    rc=1
  fi
fi

reports=$(find "$runs" -name 'asan*' -o -name 'ubsan*' 2>/dev/null | head -20)
if [ -n "$reports" ]; then
  echo "== sanitizer reports found (the suite fails):" >&2
  for r in $reports; do echo "--- $r" >&2; head -50 "$r" >&2; done
  rc=1
fi
echo "== done in $(( $(date +%s) - start )) s, exit $rc" >&2
exit $rc
