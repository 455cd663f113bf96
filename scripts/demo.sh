#!/bin/bash
# demo.sh [BACKEND_ARGS...] : shows what a QEMU guest sees behind vhost-net-user.
# On a fresh Debian 12 machine, as root: installs the Debian packages it needs, builds the
# backend (cargo build --release) and the test guest (scripts/build-guest.sh), starts
# target/release/vhost-net-user --socket-path DIR/vu.sock [BACKEND_ARGS...], boots the guest
# behind it (QEMU, TCG) and prints the guest's DHCP lease, `ip addr`, `ip route`, `ip neigh`
# and a ping to its gateway; then stops the backend. Exit status 0 when the guest got a lease.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH

scripts/need-packages.sh qemu-system-x86 busybox-static iperf3 ethtool cpio
echo "== building the backend (cargo build --release)"
cargo build --release -p vhost-net-user
echo "== building the test guest (Debian kernel + busybox, cached in ${VNU_GUEST_CACHE:-/var/tmp/vnu-guest})"
scripts/build-guest.sh
BIN=${CARGO_TARGET_DIR:-target}/release/vhost-net-user

D=$(mktemp -d /tmp/vnu-demo.XXXXXX)
BACKEND=
# shellcheck disable=SC2317  # (called by the trap)
cleanup() {
  if [ -n "$BACKEND" ] && kill -0 "$BACKEND" 2>/dev/null; then
    kill -TERM "$BACKEND" 2>/dev/null || true
    wait "$BACKEND" 2>/dev/null || true
  fi
  rm -rf "$D"
}
trap cleanup EXIT

echo "== starting: $BIN --socket-path $D/vu.sock $*"
"$BIN" --socket-path "$D/vu.sock" "$@" 2> "$D/backend.log" &
BACKEND=$!
for _ in $(seq 100); do [ -S "$D/vu.sock" ] && break; sleep 0.1; done
if [ ! -S "$D/vu.sock" ]; then
  echo "the backend did not open its socket:" >&2
  cat "$D/backend.log" >&2
  exit 1
fi

cat > "$D/show.sh" <<'GUEST'
GW=$(ip route | awk '$1 == "default" { print $3; exit }')
echo "### ip addr show dev eth0"; ip addr show dev eth0
echo "### ip route"; ip route
echo "### cat /etc/resolv.conf"; cat /etc/resolv.conf
echo "### ping -c 3 ${GW:-(no gateway)}"; [ -n "$GW" ] && ping -c 3 -W 2 "$GW"
echo "### ip neigh"; ip neigh
GUEST

echo "== booting the guest behind it (about 10 s under TCG)"
status=0
scripts/boot-guest.sh --vhost-user "$D/vu.sock" --v6wait 0 --script "$D/show.sh" > "$D/guest.out" || status=$?

echo
echo "== DHCP lease (udhcpc in the guest)"
sed -n 's/^dhcp\.\([a-z_]*\)=\(..*\)$/   \1: \2/p' "$D/guest.out" | grep -v '^   event:' || true
grep -q '^dhcp.status=bound' "$D/guest.out" || { echo "   no lease"; status=1; }
echo "   gateway ping at boot: $(sed -n 's/^guest.gw_ping=//p' "$D/guest.out")"
sed -n 's/^run: ### /== /p; t; s/^run: /   /p' "$D/guest.out"
echo
echo "== backend log"
kill -TERM "$BACKEND" 2>/dev/null || true
wait "$BACKEND" 2>/dev/null || true
BACKEND=
sed 's/^/   /' "$D/backend.log"
exit "$status"
