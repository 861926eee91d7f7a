#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# deploy/ROLE.cfg through BUILD_DIR's execmesh-ROLE --check-config with its
# TLS files present, as in a pod: --check-config reads the files tls.* name
# (under /etc/execmesh/tls, where the pod's Secret is mounted), which do not
# exist outside a pod. A test CA (scripts/test-ca.sh) is laid out as the
# kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) in a temporary
# directory, and only that path prefix of the config is rewritten to it;
# everything else is checked as shipped. Without Go (k8s.manifests checks the
# same, through the rendered ConfigMaps and the pods' mounts).
#
#   tests/k8s/check-deploy-config.sh BUILD_DIR ROLE     (ROLE: scheduler, executor or sink)
set -eu
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR ROLE" >&2; exit 2; }
build=$(cd "$1" && pwd)
role=$2
top=$(cd "$(dirname "$0")/../.." && pwd)
cfg=$top/deploy/$role.cfg
[ -f "$cfg" ] || { echo "$0: no $cfg" >&2; exit 2; }
grep -q '"/etc/execmesh/tls/' "$cfg" || { echo "$0: $cfg names no file under /etc/execmesh/tls" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$top/scripts/test-ca.sh" "$tmp/ca" --days 1
mkdir "$tmp/tls"
cp "$tmp/ca/$role.pem" "$tmp/tls/tls.crt"
cp "$tmp/ca/$role.key" "$tmp/tls/tls.key"
cp "$tmp/ca/ca.pem" "$tmp/tls/ca.crt"
sed "s#\"/etc/execmesh/tls/#\"$tmp/tls/#g" "$cfg" >"$tmp/$role.cfg"
"$build/services/$role/execmesh-$role" --config "$tmp/$role.cfg" --check-config
