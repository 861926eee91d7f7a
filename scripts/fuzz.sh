#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The libFuzzer targets of tests/fuzz (clang from Debian, ASan + UBSan): the
# decoders of the Kafka path, every gRPC request, the config loader with the
# services' tables and the admin HTTP requests. Builds them in build-fuzz/
# (CC=clang, -DEM_FUZZ=ON), then runs each from its seed corpus
# (tests/fuzz/corpus/T) and its regression inputs (tests/fuzz/regressions/T),
# two targets at a time, and prints one line per target:
#   FUZZ target=T seconds=S execs=N exec_per_s=N cov=N floor=N
#
#   scripts/fuzz.sh [--ci]     each target for 15 s (the suite's stage, under 4 minutes with its build):
#                              fails on a crash, a leak, a hang or a check, on a target whose coverage
#                              (libFuzzer's cov: count of edges) ends below its floor in
#                              tests/fuzz/floors, and unless the planted bug is found (--planted)
#   scripts/fuzz.sh --long     each target for 60 s; writes executions/s and coverage per target into
#                              the "Fuzzing" section of docs/reliability.md (fails on a crash too)
#   scripts/fuzz.sh --planted  only the planted-bug check: fuzz_records_planted (em_execution_inspect
#                              with an out-of-bounds read planted, cmake -DEM_FUZZ_PLANTED_BUG=ON) must
#                              crash with AddressSanitizer within 60 s
#   --seconds N (per target), --target T (one target), --build DIR (default build-fuzz/)
# A crash leaves its input in DIR/fuzz-runs/T/: fix the code, then keep the input in
# tests/fuzz/regressions/T/ (every run replays those first).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
mode=ci
seconds=""
only=""
build="$top/build-fuzz"
jobs=2               # the machine has 2 cores
planted_seconds=60   # found in about a second; the bound is for a slow machine
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) mode=ci; shift ;;
    --long) mode=long; shift ;;
    --planted) mode=planted; shift ;;
    --seconds) seconds=$2; shift 2 ;;
    --target) only=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '4,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -n "$seconds" ] || { [ "$mode" = long ] && seconds=60 || seconds=15; }

fuzz="$top/tests/fuzz"
targets=(records result submit cancel execute publish health config admin_http)
if [ -n "$only" ]; then
  [[ " ${targets[*]} " == *" $only "* ]] || { echo "fuzz.sh: no target '$only' (${targets[*]})" >&2; exit 2; }
  targets=("$only")
fi
start=$(date +%s)

# clang and its libFuzzer runtime (scripts/deps.sh installs both)
if ! command -v clang >/dev/null || [ ! -f "$(clang -print-resource-dir 2>/dev/null)/lib/linux/libclang_rt.fuzzer-x86_64.a" ]; then
  "$top/scripts/deps.sh"
fi

echo "== fuzz: build ($build, clang, ASan + UBSan + libFuzzer)" >&2
mkdir -p "$build"
log="$build/fuzz-build.log"
if ! { CC=clang cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEM_FUZZ=ON -DEM_FUZZ_PLANTED_BUG=ON \
         -DEM_UNIT_TESTS=OFF -DEM_DEBUG_HOOKS=ON && cmake --build "$build" --target em_fuzz -j"$jobs"; } >"$log" 2>&1; then
  grep -E 'error|Error' "$log" | head -40 >&2
  echo "== fuzz: the build FAILED (all of it in $log)" >&2
  exit 1
fi
echo "   built in $(( $(date +%s) - start )) s" >&2

runs="$build/fuzz-runs"
rm -rf "$runs"
mkdir -p "$runs"
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$top/tests/lsan.supp:print_suppressions=0"

floor_of() { awk -v t="$1" '$1 == t { print $2 }' "$fuzz/floors"; }

# run_target T SECONDS: one libFuzzer run into $runs/T (log, new units, crash
# artifacts); writes "rc cov execs exec_per_s" to $runs/T/result.
run_target() {
  local t=$1 secs=$2 bin="$build/tests/fuzz/fuzz_$1" dir="$runs/$1" rc=0 extra=()
  mkdir -p "$dir/corpus"
  [ -f "$fuzz/$t.dict" ] && extra+=(-dict="$fuzz/$t.dict")
  local inputs=("$fuzz/corpus/$t")
  [ -d "$fuzz/regressions/$t" ] && inputs+=("$fuzz/regressions/$t")
  # stdout closed: the config target's --check-config prints "configuration OK"
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
    -close_fd_mask=1 -artifact_prefix="$dir/" "${extra[@]}" "$dir/corpus" "${inputs[@]}" >"$dir/log" 2>&1 || rc=$?
  local cov execs eps
  cov=$(grep -oE 'cov: [0-9]+' "$dir/log" | tail -1 | awk '{print $2}')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log")
  echo "$rc ${cov:-0} ${execs:-0} ${eps:-0}" >"$dir/result"
}

# the planted bug: the CI mode must find it, as a crash in em_execution_inspect
check_planted() {
  local dir="$runs/planted" rc=0
  mkdir -p "$dir/corpus"
  "$build/tests/fuzz/fuzz_records_planted" -max_total_time="$planted_seconds" -timeout=10 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$dir/" "$dir/corpus" "$fuzz/corpus/records" >"$dir/log" 2>&1 || rc=$?
  local execs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")
  if [ "$rc" != 0 ] && grep -q 'ERROR: AddressSanitizer: heap-buffer-overflow' "$dir/log" &&
     grep -q 'in em_execution_inspect' "$dir/log"; then
    echo "FUZZ_PLANTED found=yes execs=${execs:-0} (a heap-buffer-overflow in em_execution_inspect; input $(ls "$dir"/crash-* 2>/dev/null | head -1))" >&2
    return 0
  fi
  echo "FUZZ_PLANTED found=no exit=$rc: the CI mode did not find the planted bug in ${planted_seconds} s (log: $dir/log)" >&2
  return 1
}

rc=0
if [ "$mode" = planted ]; then
  check_planted || rc=1
  echo "== fuzz: done in $(( $(date +%s) - start )) s, exit $rc" >&2
  exit $rc
fi

echo "== fuzz: ${#targets[@]} targets, ${seconds} s each, ${jobs} at a time ($mode mode)" >&2
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" "$seconds" &
  running=$((running + 1))
done
wait || true

results=()
for t in "${targets[@]}"; do
  read -r trc cov execs eps <"$runs/$t/result"
  floor=$(floor_of "$t")
  echo "FUZZ target=$t seconds=$seconds execs=$execs exec_per_s=$eps cov=$cov floor=${floor:-none}" >&2
  results+=("$t $execs $eps $cov ${floor:-0}")
  if [ "$trc" != 0 ]; then
    echo "== fuzz: $t FAILED (exit $trc): a crash, leak, hang or broken check; the input: $(ls "$runs/$t"/crash-* "$runs/$t"/leak-* "$runs/$t"/timeout-* 2>/dev/null | head -1)" >&2
    grep -E 'FUZZ CHECK|ERROR:|SUMMARY|^    #[0-9] ' "$runs/$t/log" | head -25 | sed 's/^/   /' >&2
    rc=1
  elif [ -z "$floor" ]; then
    echo "== fuzz: $t has no floor in tests/fuzz/floors" >&2
    rc=1
  elif [ "$mode" = ci ] && [ "$cov" -lt "$floor" ]; then
    echo "== fuzz: $t FAILED: coverage $cov below its floor $floor (tests/fuzz/floors)" >&2
    rc=1
  fi
done

if [ "$mode" = ci ] && [ -z "$only" ]; then
  check_planted || rc=1
fi

if [ "$mode" = long ] && [ "$rc" = 0 ] && [ -z "$only" ]; then
  doc="$top/docs/reliability.md"
  table=$(mktemp)
  {
    echo "<!-- fuzz-long:begin (written by scripts/fuzz.sh --long; do not edit by hand) -->"
    echo "Last \`scripts/fuzz.sh --long\`: $(date -u +%Y-%m-%d), ${seconds} s per target, two targets at a time on"
    echo "this project's 2-core machine, from the committed seeds (clang $(clang -dumpversion), ASan + UBSan)."
    echo
    echo "| target | executions | executions/s | coverage (edges) | CI floor |"
    echo "|---|---|---|---|---|"
    for r in "${results[@]}"; do
      read -r t execs eps cov floor <<<"$r"
      echo "| \`$t\` | $execs | $eps | $cov | $floor |"
    done
    echo "<!-- fuzz-long:end -->"
  } >"$table"
  if grep -q '<!-- fuzz-long:begin' "$doc"; then
    python3 - "$doc" "$table" <<'EOF'
import re, sys
doc, table = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(doc).read()
text = re.sub(r"<!-- fuzz-long:begin.*?<!-- fuzz-long:end -->", lambda m: table, text, flags=re.S)
open(doc, "w").write(text)
EOF
    echo "== fuzz: figures written to docs/reliability.md (Fuzzing)" >&2
  else
    echo "== fuzz: docs/reliability.md has no fuzz-long markers; the figures:" >&2
    cat "$table" >&2
  fi
  rm -f "$table"
fi
echo "== fuzz: done in $(( $(date +%s) - start )) s, exit $rc" >&2
exit $rc
