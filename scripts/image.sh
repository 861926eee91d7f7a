#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds the execmesh container image (deploy/Containerfile) with podman.
#
#   scripts/image.sh build [--tag TAG] [--no-cache]
#                                        the image (default execmesh:dev); prints its size and build
#                                        time (--no-cache: every layer again, the base kept)
#   scripts/image.sh base                only the base image debian:bookworm-slim
#   scripts/image.sh probe               only grpc-health-probe for the image (.cache/image/)
#   scripts/image.sh deps                only install the tools (podman, runc, debootstrap, uidmap)
#   scripts/image.sh --help
#
# No image registry is reachable from our machines, so the base the
# Containerfile names (FROM debian:bookworm-slim) is made here: debootstrap
# --variant=minbase bookworm from the Debian mirror this machine's apt uses,
# trimmed as Debian's own -slim images are (no docs, man pages or locales;
# dpkg told to leave them out of later installs too), imported and tagged
# debian:bookworm-slim in podman's local storage. The tarball is cached in
# $EM_IMAGE_CACHE (default ~/.cache/execmesh/bookworm-slim-YYYYMMDD.tar; the
# newest one is reused; EM_IMAGE_REFRESH_BASE=1 makes a new one), and an
# image already tagged so is used as it is. The build never pulls
# (--pull=never), so the shipped FROM line is the one built from.
#
# grpc-health-probe, the readiness probe of deploy/k8s (an exec probe: the
# kubelet's own gRPC probe cannot present a client certificate), is built
# here before the image, with this machine's Go from the Go module proxy: the
# version scripts/deps.sh pins for the tests, static (CGO_ENABLED=0),
# -trimpath, stripped, into .cache/image/ (.containerignore lets that one file
# into the build context; the Containerfile checks and copies it). Kept while
# its version matches. The build stage has no Go (Debian 12's is too old for
# the probe's module), hence here.
#
# Runs podman with runc (crun refuses our hybrid cgroup layout), the host
# network (the build stage fetches Debian packages and librdkafka's source)
# and nofile/nproc ulimits within this machine's hard limits (podman's
# defaults exceed them). Idempotent; installs what is missing with apt-get
# (quiet when everything is there).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

base_tag=debian:bookworm-slim
cache=${EM_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/execmesh}
# podman's options every command here needs (exported for tests/image)
podman=(podman --runtime runc)
ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

die() { echo "image: $*" >&2; exit 1; }

# grpc-health-probe's module@version, as scripts/deps.sh pins it (one truth)
probe_mod=$(sed -n 's/^ *"grpc-health-probe \(github\.com[^"@ ]*@[^" ]*\)"$/\1/p' "$top/scripts/deps.sh")
probe_bin=$top/.cache/image/grpc-health-probe

usage() { sed -n '4,12p' "$0" | sed 's/^# \{0,1\}//'; }

# The Debian mirror apt uses here (deb822 .sources first, then one-line lists).
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u {print u; exit}' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo http://deb.debian.org/debian
}

install_tools() {
  local p missing=()
  for p in podman runc debootstrap uidmap fuse-overlayfs slirp4netns containernetworking-plugins; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=sudo
  fi
  echo "image: installing ${missing[*]}" >&2
  local log
  log=$(mktemp)
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
         { $sudo apt-get update -qq &&
           $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; } \
       >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "apt-get failed installing: ${missing[*]}"
  fi
  rm -f "$log"
}

# Makes the root filesystem tarball of debian:bookworm-slim into $1.
make_base_tar() {
  local out=$1 mirror root
  mirror=$(debian_mirror)
  root=$(mktemp -d "$cache/bookworm-root.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  echo "image: debootstrap --variant=minbase bookworm from $mirror (a few minutes) ..." >&2
  local log="$cache/debootstrap.log"
  if ! debootstrap --variant=minbase --merged-usr bookworm "$root" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "debootstrap failed (whole log: $log)"
  fi
  # As Debian's -slim images (debuerreotype's slimify): later installs leave
  # out docs, man pages and locales; remove those the base already has.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# execmesh's debootstrap base, as debian:*-slim: no docs, man pages or locales
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/groff/* "$root"/usr/share/lintian/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*
  # The machine's mirror, as the image's apt source (the build stages use it)
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >"$root/etc/apt/sources.list"
  : >"$root/etc/machine-id"
  tar --numeric-owner --xattrs -C "$root" -cf "$out.part" .
  mv "$out.part" "$out"
}

ensure_base() {
  if "${podman[@]}" image exists "$base_tag" && [ "${EM_IMAGE_REFRESH_BASE:-0}" != 1 ]; then
    return 0
  fi
  mkdir -p "$cache"
  local tarball
  tarball=$(ls -1 "$cache"/bookworm-slim-*.tar 2>/dev/null | sort | tail -n 1 || true)
  if [ -z "$tarball" ] || [ "${EM_IMAGE_REFRESH_BASE:-0}" = 1 ]; then
    tarball="$cache/bookworm-slim-$(date -u +%Y%m%d).tar"
    make_base_tar "$tarball"
  fi
  echo "image: importing $tarball as $base_tag" >&2
  "${podman[@]}" import --quiet --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase bookworm, slimmed (scripts/image.sh)" \
    "$tarball" "$base_tag" >/dev/null
}

# Builds $probe_bin unless it is already $probe_mod, static.
build_probe() {
  [ -n "$probe_mod" ] || die "scripts/deps.sh pins no grpc-health-probe (\"grpc-health-probe MODULE@VERSION\" in go_tools)"
  PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null || die "no 'go' on PATH: it builds grpc-health-probe for the image"
  if [ -x "$probe_bin" ] &&
     go version -m "$probe_bin" 2>/dev/null | awk -v m="${probe_mod%@*}" -v v="${probe_mod#*@}" \
       '$1 == "mod" && $2 == m && $3 == v {mod = 1} $1 == "build" && $2 == "CGO_ENABLED=0" {static = 1} END {exit !(mod && static)}'; then
    return 0
  fi
  echo "image: go install $probe_mod (static, for the image's readiness probes) ..." >&2
  rm -f "$probe_bin"
  mkdir -p "$(dirname "$probe_bin")"
  local log
  log=$(mktemp)
  if ! CGO_ENABLED=0 GOBIN=$(dirname "$probe_bin") GOFLAGS= GOTOOLCHAIN=local \
       nice go install -trimpath -ldflags='-s -w' "$probe_mod" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "go install $probe_mod failed"
  fi
  rm -f "$log"
}

build_image() {
  local tag=$1
  shift
  ensure_base
  build_probe
  echo "image: podman build $tag from deploy/Containerfile ..." >&2
  SECONDS=0
  # nice: other engineers' tests share these 2 cores
  nice "${podman[@]}" build --pull=never --network host "${ulimits[@]}" \
    --layers "$@" --tag "$tag" --file "$top/deploy/Containerfile" "$top"
  local secs=$SECONDS size
  size=$("${podman[@]}" image inspect --format '{{.Size}}' "$tag")
  echo "image: $tag built in ${secs} s; size $size bytes ($((size / 1000000)) MB)"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  -h|--help|help) usage; exit 0 ;;
  build)
    tag=execmesh:dev
    extra=()
    while [ $# -gt 0 ]; do
      case "$1" in
        --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift 2 ;;
        --tag=*) tag=${1#--tag=}; shift ;;
        --no-cache) extra+=(--no-cache); shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
      esac
    done
    install_tools
    build_image "$tag" ${extra[@]+"${extra[@]}"}
    ;;
  base) install_tools; ensure_base ;;
  probe) build_probe; echo "$probe_bin" ;;
  deps) install_tools ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac
