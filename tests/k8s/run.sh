#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# The ctest k8s.manifests: renders deploy/k8s (base and every overlay) with
# kustomize's Go API and checks the objects against the services' configs;
# BUILD_DIR's services run --check-config on every ConfigMap, with the pods'
# TLS Secrets stood in for by a test CA (scripts/test-ca.sh, openssl).
#
#   tests/k8s/run.sh BUILD_DIR [go test flags...]
#
# The first run downloads the Go modules in go.sum from the module proxy
# (about 25 MB) and compiles them (about a minute on 2 cores); later runs take seconds.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [go test flags...]" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
cd "$(dirname "$0")"
PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "k8s.manifests: no 'go' on PATH: the Go toolchain renders the manifests" >&2; exit 1; }
export EM_BUILD_DIR="$build"
export GOTOOLCHAIN=local                 # go.mod asks for no newer Go than the machine's (1.26)
export GOFLAGS="-mod=readonly -buildvcs=false"
exec go test -count=1 "$@" ./...
