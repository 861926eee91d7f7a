#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# An OCI prestart hook (podman --hooks-dir; runs on the host once the
# container's cgroups exist, before its process starts): delegates the
# container's own cgroup v1 directories (memory, pids, cpu, freezer) to the
# uid the image runs as, 65532, as systemd's Delegate=yes does for a
# service's user. With /sys/fs/cgroup mounted read-write into the container,
# the executor (uid 65532) can then make a cgroup per exec execution below
# its own (executor.cgroups = "required" starts). tests/image uses it on a
# container annotated io.execmesh.delegate-cgroups=true. cgroup v1 only (this
# fleet's layout); v2 needs the controllers in subtree_control and the
# executor out of the container's root group (no internal processes).
set -eu
uid=${EM_DELEGATE_UID:-65532}
pid=$(/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
while IFS=: read -r _ ctrls path; do
  case "$ctrls" in
    memory|pids|cpu|freezer) d="/sys/fs/cgroup/$ctrls$path" ;;
    cpu,cpuacct|cpuacct,cpu) d="/sys/fs/cgroup/cpu,cpuacct$path" ;;
    *) continue ;;
  esac
  [ -d "$d" ] || continue
  chown "$uid:$uid" "$d" "$d/cgroup.procs" "$d/tasks"
done <"/proc/$pid/cgroup"
