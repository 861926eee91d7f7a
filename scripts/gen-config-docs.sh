#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Writes docs/configuration.md from the services' settings tables (each
# binary's --print-config-reference), so the reference never drifts from the
# code. A test (docs.configuration_current) fails when the file is stale.
#   scripts/gen-config-docs.sh BUILD_DIR [OUTPUT]
set -euo pipefail
build=${1:?usage: gen-config-docs.sh BUILD_DIR [OUTPUT]}
out=${2:-$(cd "$(dirname "$0")/.." && pwd)/docs/configuration.md}
{
  cat <<'HEAD'
# Configuration reference

Generated from the settings tables in the code by `scripts/gen-config-docs.sh`; do not edit by hand.

Each service reads one [libconfig](https://hyperrealm.github.io/libconfig/) file given with
`--config FILE`. Keys are dotted paths into groups: `kafka.bootstrap` is written

```
kafka = {
  bootstrap = "127.0.0.1:9092";
};
```

Any key can also be set on the command line, after the file: `--set kafka.bootstrap=host:9092`
(lists are comma-separated there). A file with an unknown key, a wrong type or a value out of range is
refused at start, naming the file, the line and the key; `--check-config` validates without starting.
Example files are in `deploy/`.

HEAD
  for b in scheduler/execmesh-scheduler executor/execmesh-executor sink/execmesh-sink devkafka/execmesh-devkafka; do
    "$build/services/$b" --print-config-reference
  done
} >"$out.tmp"
mv "$out.tmp" "$out"
