#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs every Debian package the build and the tests need, builds
# librdkafka 2.8.0 from Debian 13's source into .cache/librdkafka-2.8.0
# (scripts/librdkafka.sh; Debian 12's 2.0.2 has consumer defects we hit), and
# the outside gRPC clients the tests use (grpc-health-probe, grpcurl:
# `go install`, into .cache/bin of the repository). Idempotent and quiet when
# everything is already there; prints what it installs otherwise.
#   scripts/deps.sh            build + test dependencies
#   scripts/deps.sh --build    only what the build needs
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

# Go tools, pinned: name, module@version
go_tools=(
  "grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe@v0.4.61"
  "grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
)

install_go_tools() {
  local bin="$top/.cache/bin" entry name mod
  for entry in "${go_tools[@]}"; do
    name=${entry%% *}
    mod=${entry#* }
    [ -x "$bin/$name" ] && continue
    if ! command -v go >/dev/null; then
      echo "deps: go not found: cannot install $name (tests that use it will fail)" >&2
      return 1
    fi
    echo "deps: go install $mod" >&2
    GOBIN="$bin" GOFLAGS=-mod=mod go install "$mod" >&2
  done
}

# librdkafka-dev (2.0.2) stays for -DEM_LIBRDKAFKA=system builds; the last
# line is what scripts/librdkafka.sh builds 2.8.0 with (apt-get source needs
# apt only, the .orig tarball is unpacked with tar: no dpkg-dev). Its
# configure insists on a C++ compiler though only the C library is built,
# and uses python3 for the linker script that limits the exported symbols.
build_pkgs=(
  cmake make gcc pkg-config
  libgrpc-dev protobuf-compiler-grpc protobuf-compiler
  libprotobuf-c-dev protobuf-c-compiler
  librdkafka-dev libconfig-dev libcmocka-dev libmicrohttpd-dev libssl-dev
  g++ python3 patch libsasl2-dev libzstd-dev liblz4-dev zlib1g-dev
)
# postgresql (initdb, pg_ctl under /usr/lib/postgresql/N/bin) and
# postgresql-client (psql): the neighbour of the resource flood test, which
# starts a server of its own (tests/integration/pg.py). dnsmasq-base (the
# binary without the system service, which would take port 53) and iptables:
# the hosts-and-DNS test (tests/integration/hosts.py). The container image's
# tools (podman, runc, debootstrap) are installed by scripts/image.sh.
# clang and libclang-rt-14-dev (its libFuzzer and sanitizer runtimes, which
# --no-install-recommends leaves out): the fuzz targets (scripts/fuzz.sh).
# prometheus (the server and promtool) and python3-yaml: the Prometheus, alert
# rules and dashboard test; tmux: execmeshctl's terminal progress line test.
test_pkgs=(
  python3-grpcio python3-protobuf python3-confluent-kafka python3-pytest
  kcat procps iproute2 postgresql postgresql-client dnsmasq-base iptables
  clang libclang-rt-14-dev prometheus tmux python3-yaml
)

want=("${build_pkgs[@]}")
if [ "${1:-}" != "--build" ]; then
  want+=("${test_pkgs[@]}")
fi

install_debian_pkgs() {
  local p missing=()
  for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0

  echo "deps: installing ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  local log
  log=$(mktemp)
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "deps: apt-get failed installing: ${missing[*]}" >&2
    exit 1
  fi
  rm -f "$log"
  echo "deps: done" >&2
}

install_debian_pkgs
"$top/scripts/librdkafka.sh"
if [ "${1:-}" != "--build" ]; then
  install_go_tools
fi
