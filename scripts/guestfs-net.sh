#!/bin/bash
# guestfs-net.sh MODE | --build-only : boots libguestfs's appliance (direct backend, network
# on, TCG) in a Debian 13 root holding libguestfs, and prints what the appliance's network
# looks like.
#
# MODE says what libguestfs finds as `passt`, which decides its network:
#   slirp        none (/usr/bin/passt hidden), so libguestfs gives QEMU `-netdev user`;
#   debian-passt Debian's /usr/bin/passt, with QEMU `-netdev stream`;
#   vnu-passt    this project's binary ($VNU_BIN, default target/release/vhost-net-user) as
#                /usr/local/bin/passt, found first through PATH, with QEMU `-netdev stream`.
# Hiding and adding happen in the entered command's private mount namespace (a bind mount, a
# tmpfs on /usr/local/bin); the root on disk is never changed for it.
#
# The root is debian13.sh's, which holds guestfish and a kernel for this. supermin builds the
# appliance from the root's packages and kernel on the first run (a few seconds) and keeps it,
# with QEMU's probed features, in the root's /var/tmp/guestfs-cache; later runs reuse it. A boot
# takes about 25 s of one core (TCG).
#
# Output: the lines of interest start with "vnu-guestfs "; `key: value`, one a line:
#   netdev   QEMU's -netdev option as libguestfs gave it
#   passt    the passt command line libguestfs ran (passt modes)
#   inet     the `inet` line of the appliance's `ip -4 addr show dev eth0`
#   route    each line of its `ip -4 route` (several)
#   route6   each line of its `ip -6 route` (once a default route came by RA, or after 5 s)
#   dns      each nameserver of its /etc/resolv.conf
#   gwmac    the gateway's MAC in its neighbour table, after a TCP connect to the gateway
#   running  files in libguestfs's socket directory while the appliance runs
#   sockdir  that directory's owner and mode
#   passtuser the user the passt process (the pid in its pid file) runs as
#   after    files left there once QEMU has gone and passt has exited (passt modes)
#   leftover processes still holding that directory after libguestfs closed ("none")
#   seconds  guestfish's wall time
# `--build-only` builds the root (if needed) and prints where it is.
# Exit status 0 once the appliance ran and answered; the full libguestfs log goes to stderr.
set -euo pipefail
SCRIPTS=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

usage() {
  echo "usage: guestfs-net.sh slirp|debian-passt|vnu-passt|--build-only" >&2
  exit 2
}

# Runs inside the root: $1 the mode, $2 the directory of this script's private state.
inside() {
  local mode=$1 run=$2
  case $mode in
    slirp)
      # libguestfs runs `passt --help` and uses passt when it exits 0 or 1; a device node
      # cannot be executed, so the check fails and it falls back to `-netdev user`.
      mount --bind /dev/null /usr/bin/passt
      ;;
    vnu-passt)
      mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin
      ln -s "$VNU_BIN" /usr/local/bin/passt
      ;;
    debian-passt) ;;
  esac
  export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
  export LIBGUESTFS_CACHEDIR=/var/tmp/guestfs-cache TMPDIR=/var/tmp/guestfs-tmp
  mkdir -p "$LIBGUESTFS_CACHEDIR" "$TMPDIR"
  # libguestfs makes its socket directory (guestfsd.sock, passt.sock, passt's pid file) as
  # /tmp/libguestfsXXXXXX when run as root and removes it when the handle closes, so it is
  # inspected from guestfish (`!` runs a command here) before the close. A private /tmp makes
  # it the only such directory; this run's own directory moves to /mnt first.
  mount --bind "$run" /mnt
  run=/mnt
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  # What runs in the appliance. guestfish strips quotes inside its arguments, so it goes there
  # in base64. The TCP connect (to the gateway's port 1: the host's loopback, refused) makes the
  # appliance resolve the gateway's MAC; it has no ping.
  local probe
  probe=$(base64 -w0 <<'PROBE'
echo @inet $(ip -4 addr show dev eth0 | grep -w inet)
ip -4 route | sed 's/^/@route /'
sed -n 's/^nameserver /@dns /p' /etc/resolv.conf
i=0
while [ $i -lt 50 ] && ! ip -6 route | grep -q '^default'; do sleep 0.1; i=$((i + 1)); done
ip -6 route | sed 's/^/@route6 /'
timeout 3 bash -c 'exec 3<>/dev/tcp/169.254.2.2/1' 2>/dev/null
set -- $(ip neigh show 169.254.2.2)
echo @gwmac $5
PROBE
)
  local started=$SECONDS
  guestfish -v -x > "$run/out" 2> "$run/log" <<GUESTFISH || { cat "$run/log" >&2; exit 1; }
set-network true
add-drive /dev/null format:raw
run
debug sh "echo $probe | base64 -d | sh"
! $SCRIPTS/guestfs-net.sh --running $run
shutdown
! $SCRIPTS/guestfs-net.sh --after $run
GUESTFISH
  echo "vnu-guestfs seconds: $((SECONDS - started))"
  sed -n 's/^@\([a-z0-9]*\) */vnu-guestfs \1: /p' "$run/out"
  grep -o -- '-netdev [^ ]*' "$run/log" | tail -n 1 | sed 's/^/vnu-guestfs netdev: /'
  awk '/libguestfs: command: run: passt$/ { on = 1; cmd = "passt"; next }
    on && /^libguestfs: command: run: \\ / { sub(/^libguestfs: command: run: \\ /, ""); cmd = cmd " " $0; next }
    on { print "vnu-guestfs passt: " cmd; on = 0 }' "$run/log"
  # The passt processes and anything else holding the socket directory are gone once
  # guestfish has closed: libguestfs waits for QEMU; passt exits on its own (--one-off).
  local deadline=$((SECONDS + 10)) left sockdir
  sockdir=$(cat "$run/sockdir")
  while :; do
    left=$(pgrep -a -f "$sockdir/" || true)
    [ -z "$left" ] || [ $SECONDS -ge $deadline ] && break
    sleep 0.2
  done
  echo "vnu-guestfs leftover: ${left:-none}"
  cat "$run/log" >&2
}

# Runs from guestfish while the appliance runs: what libguestfs's socket directory holds, and
# passt's pid (from its pid file) for --after.
running() {
  local run=$1 f
  cd /tmp/libguestfs*
  pwd > "$run/sockdir"
  echo "@running $(ls | xargs)"
  echo "@sockdir $(stat -c '%U %a' .)"
  for f in passt*.pid; do
    [ -f "$f" ] || continue
    cat "$f" > "$run/passt-pid"
    echo "@passtuser $(ps -o user= -p "$(cat "$f")")"
  done
}

# Runs from guestfish after `shutdown` (QEMU gone): waits up to 10 s for passt to exit, then
# lists what is left in the socket directory.
after() {
  local run=$1 pid deadline=$((SECONDS + 10))
  if [ -s "$run/passt-pid" ]; then
    pid=$(cat "$run/passt-pid")
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && echo "@after passt pid $pid still running"
  fi
  cd "$(cat "$run/sockdir")"
  echo "@after $(ls | xargs)"
}

case ${1:-} in
  --inside) inside "$2" "$3" ;;
  --running) running "$2" ;;
  --after) after "$2" ;;
  --build-only|slirp|debian-passt|vnu-passt)
    mode=$1
    [ "$(id -u)" = 0 ] || { echo "guestfs-net.sh: needs root" >&2; exit 1; }
    if [ "$mode" = --build-only ]; then
      exec "$SCRIPTS/debian13.sh" --build-only
    fi
    VNU_BIN=$(readlink -f "${VNU_BIN:-$SCRIPTS/../target/release/vhost-net-user}")
    if [ "$mode" = vnu-passt ] && [ ! -x "$VNU_BIN" ]; then
      echo "guestfs-net.sh: no backend binary at $VNU_BIN (cargo build --release -p vhost-net-user)" >&2
      exit 1
    fi
    export VNU_BIN
    run=$(mktemp -d /tmp/vnu-gfs.XXXXXX)
    trap 'rm -rf "$run"' EXIT
    export VNU_DEBIAN13_SHARE=$SCRIPTS
    [ "$mode" != vnu-passt ] || VNU_DEBIAN13_SHARE+=":$(dirname "$VNU_BIN")"
    export VNU_DEBIAN13_ENV=VNU_BIN
    "$SCRIPTS/debian13.sh" "$SCRIPTS/guestfs-net.sh" --inside "$mode" "$run"
    ;;
  *) usage ;;
esac
