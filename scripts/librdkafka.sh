#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds the librdkafka the project compiles, links and runs against: 2.8.0,
# from Debian 13 (trixie)'s source package, installed into
# .cache/librdkafka-2.8.0 of the repository (CMake's EM_LIBRDKAFKA default;
# the executables find it through their RUNPATH). Debian 12's own 2.0.2
# skips offsets around pause/resume in rd_kafka_consume_batch_queue (fixed
# in 2.1.0); it stays installed for kcat, python3-confluent-kafka and
# -DEM_LIBRDKAFKA=system builds.
#
# The source comes through apt with a private sources list, lists and cache
# in a scratch directory, so the system's apt configuration and state are
# left alone, and apt checks the download against trixie's signed Sources
# index. The upstream .orig tarball is used (Debian's one patch is a
# Makefile bashism that does not matter here) with our patches from
# scripts/patches/ (the mock cluster's commit rule, see below). Needs no
# root; scripts/deps.sh installs the compiler and the -dev packages first.
#
# Quiet when the stamp in the prefix matches this script's build; one line
# when it builds (about 40 s on 2 cores); on failure the step is named with
# the end of its log (the whole log stays in .cache/librdkafka-2.8.0.log).
# Runs one at a time (flock), so two scripts starting together build once.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

version=2.8.0
suite=trixie
# librdkafka_2.8.0.orig.tar.gz as listed in trixie's librdkafka_2.8.0-1.dsc
orig_sha256=5bd1c46f63265f31c6bfcedcde78703f77d28238eadf23821c2b43fc30be3e25
cache="$top/.cache"
prefix="$cache/librdkafka-$version"
log="$cache/librdkafka-$version.log"
# Features Debian builds with, except curl (OIDC token fetching, unused
# here). --enable-X makes a missing -dev package a configure error instead
# of a quietly smaller library; lz4 has no such switch and is checked below.
configure_args=(--prefix="$prefix" --disable-curl --enable-ssl --enable-gssapi --enable-zstd --enable-zlib
                --enable-lz4-ext --no-download)
# config.h lines that must be there: TLS, SASL SCRAM (via OpenSSL), GSSAPI,
# and the compression codecs from Debian's libraries.
required_features=(WITH_SSL WITH_SASL_SCRAM WITH_SASL_CYRUS WITH_ZSTD WITH_ZLIB WITH_LZ4_EXT)
# Our patches (scripts/patches/librdkafka-$version-*.patch, applied in name
# order): each says in its header what it changes and why. Today one, to the
# mock cluster only (devkafka): it accepts offset commits while a group joins,
# as Apache Kafka does; the client code is as Debian ships it.
patches=("$top"/scripts/patches/librdkafka-"$version"-*.patch)
[ -e "${patches[0]}" ] || patches=()
patch_sums=$( [ ${#patches[@]} -eq 0 ] || sha256sum "${patches[@]}" | cut -d' ' -f1 | tr '\n' ' ')
stamp="librdkafka $version $orig_sha256 ${configure_args[*]} patches: $patch_sums"
stamp_file="$prefix/.execmesh-build"

installed() { [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; }

installed && exit 0

mkdir -p "$cache"
exec 9>"$cache/librdkafka.lock"
if ! flock -w 900 9; then
  echo "librdkafka: another build of $prefix held $cache/librdkafka.lock for 15 minutes; giving up" >&2
  exit 1
fi
installed && exit 0  # built by whoever held the lock

work=$(mktemp -d "$cache/librdkafka-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
: >"$log"

# step NAME COMMAND...: runs COMMAND with its output in the log; on failure
# names the step, shows the end of the log and exits.
step() {
  local name=$1
  shift
  echo "== $name: $*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    echo >&2 # ends the progress line
    echo "librdkafka: step '$name' failed: $*" >&2
    tail -n 25 "$log" | sed 's/^/  | /' >&2
    echo "librdkafka: whole log in $log" >&2
    exit 1
  fi
}

printf 'librdkafka: building %s from Debian %s source into %s ... ' "$version" "$suite" "$prefix" >&2
SECONDS=0

mkdir -p "$work/lists/partial" "$work/cache" "$work/dl" "$work/src" "$work/stage"
echo "deb-src http://deb.debian.org/debian $suite main" >"$work/sources.list"
apt=(apt-get -q -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache")
step "apt-get update ($suite deb-src, private lists)" "${apt[@]}" update
# As root apt warns that '_apt' cannot write the scratch directory and
# downloads unsandboxed; the hashes are still checked.
step "apt-get source librdkafka/$suite" env -C "$work/dl" "${apt[@]}" source --download-only "librdkafka/$suite"
orig="$work/dl/librdkafka_$version.orig.tar.gz"
step "check $(basename "$orig") (is $suite's librdkafka still $version?)" \
  sh -c 'ls -l "$1" && echo "$2  $1" | sha256sum -c -' sh "$orig" "$orig_sha256"
step "unpack $(basename "$orig")" tar -xzf "$orig" -C "$work/src"
src="$work/src/librdkafka-$version"
for p in "${patches[@]}"; do
  step "apply $(basename "$p")" patch -d "$src" -p1 --forward --batch -i "$p"
done
step "configure" env -C "$src" ./configure "${configure_args[@]}"
check_features() {
  local f missing=()
  for f in "${required_features[@]}"; do
    grep -q "^#define $f 1" "$src/config.h" || missing+=("$f")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "configure left out: ${missing[*]} (a -dev package missing? see scripts/deps.sh build_pkgs)"
  return 1
}
step "check configure's features (${required_features[*]})" check_features
# Only the C library (src/): the C++ wrapper and the examples are not used.
step "make -C src" make -C "$src/src" -j"$(nproc)"
step "make -C src install (staged)" make -C "$src/src" install DESTDIR="$work/stage"
staged="$work/stage$prefix"
check_pc() {
  local got
  got=$(pkg-config --modversion "$staged/lib/pkgconfig/rdkafka.pc") || return 1
  echo "rdkafka.pc says $got"
  [ "$got" = "$version" ] && [ -f "$staged/include/librdkafka/rdkafka.h" ] && [ -e "$staged/lib/librdkafka.so" ]
}
step "check the staged install (rdkafka.pc version, header, library)" check_pc
echo "$stamp" >"$staged/.execmesh-build"
# Swap the whole prefix in at once: processes still running on the old
# library keep their mapped copy, and a half-finished install is never seen.
if [ -e "$prefix" ]; then
  step "move the old install aside" mv "$prefix" "$work/old"
fi
step "move the install into place" mv "$staged" "$prefix"
echo "done in ${SECONDS} s" >&2
