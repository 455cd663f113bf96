#!/bin/bash
# debian13.sh [--build-only | COMMAND ARG...] : runs COMMAND inside a Debian 13 "trixie" root
# beside this Debian 12 host: QEMU 10, libvirt 11 and passt as Debian ships them today, for
# tests and benchmarks against the current stack while the host keeps its QEMU 7.2.
#
# The root is built once (debootstrap, then apt-get: about a minute) and kept in
# $VNU_DEBIAN13_ROOT (default /var/tmp/vnu-debian13); `--build-only` just builds it and prints
# where. Needs root.
#
# COMMAND runs in a mount namespace of its own after pivot_root into the root, not chroot:
# passt (and libvirt's passt backend) creates a user namespace, which the kernel refuses to a
# chrooted process. /proc, /sys, /dev and /tmp are the host's; so are the directories named in
# $VNU_DEBIAN13_SHARE (colon-separated, mounted at the same paths: guest images, sockets). The
# environment is reset to a plain PATH, HOME and TERM, plus what $VNU_DEBIAN13_ENV names
# (colon-separated variable names).
set -euo pipefail
ROOT=${VNU_DEBIAN13_ROOT:-/var/tmp/vnu-debian13}
SCRIPTS=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# What the root holds; a change here rebuilds it.
# guestfish and a kernel are libguestfs's appliance (scripts/guestfs-net.sh).
PACKAGES="qemu-system-x86 qemu-utils ipxe-qemu seabios passt libvirt-daemon-system \
libvirt-daemon-driver-qemu libvirt-clients procps samba guestfish linux-image-amd64"
MIRROR=${VNU_DEBIAN13_MIRROR:-http://deb.debian.org/debian}
STAMP="$ROOT/.vnu-root"

if [ "$(id -u)" != 0 ]; then
  echo "debian13.sh: needs root (debootstrap, mount namespaces, pivot_root)" >&2
  exit 1
fi

# Becomes "$@" (exec) in root $1, through a private mount namespace and pivot_root: each step
# execs the next, so the caller's pid ends up being the command's.
enter() {
  local root=$1
  shift
  local passed=()
  local name names=${VNU_DEBIAN13_ENV:-}
  for name in ${names//:/ }; do
    [ -n "${!name+set}" ] && passed+=("$name=${!name}")
  done
  exec unshare --mount --propagation private -- /bin/bash -c '
    set -euo pipefail
    root=$1 share=$2
    shift 2
    mount --rbind "$root" "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount --rbind /tmp "$root/tmp"
    IFS=: read -ra dirs <<< "$share"
    for d in "${dirs[@]}"; do
      [ -n "$d" ] || continue
      mkdir -p "$root$d"
      mount --rbind "$d" "$root$d"
    done
    cd "$root"
    mkdir -p .oldroot
    pivot_root . .oldroot
    umount -l /.oldroot
    cd /
    exec "$@"
  ' debian13-enter "$root" "${VNU_DEBIAN13_SHARE:-}" \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    TERM="${TERM:-dumb}" "${passed[@]}" "$@"
}

build() {
  "$SCRIPTS/need-packages.sh" debootstrap
  local fresh="$ROOT.new"
  rm -rf "$fresh"
  echo "debian13.sh: building the Debian 13 root in $ROOT (about a minute)" >&2
  debootstrap --variant=minbase trixie "$fresh" "$MIRROR" >&2
  cat > "$fresh/etc/apt/sources.list" <<SOURCES
deb $MIRROR trixie main
deb $MIRROR trixie-updates main
deb http://deb.debian.org/debian-security trixie-security main
SOURCES
  # No service starts inside the root while packages install; the tests start what they need.
  printf '#!/bin/sh\nexit 101\n' > "$fresh/usr/sbin/policy-rc.d"
  chmod 755 "$fresh/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$fresh/etc/resolv.conf"
  (enter "$fresh" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $PACKAGES") >&2
  echo "$PACKAGES" > "$fresh/.vnu-root"
  rm -rf "$ROOT"
  mv "$fresh" "$ROOT"
}

# One build at a time: tests start several guests at once, and each may find the root missing.
# The lock is this script itself, opened for reading: no file to create in /var/tmp, where
# another user could have put a link in its place.
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PACKAGES" ]; then
  (
    flock 9
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PACKAGES" ]; then
      build
    fi
  ) 9< "${BASH_SOURCE[0]}"
fi
if [ "${1:-}" = --build-only ]; then
  echo "$ROOT"
  exit 0
fi
[ $# -gt 0 ] || set -- /bin/bash
enter "$ROOT" "$@"
