#!/bin/bash
# perf/guest-cpu.sh [ring|passt] [SECONDS]
#
# Where the TCG guest's CPU time goes while it moves data, behind the backend's vhost-user ring
# (the default) or behind Debian's passt: the guest runs iperf3 -R (host→guest), then iperf3
# (guest→host), against a server at 10.0.2.2, and reads /proc/stat around each. It prints,
# per direction, the rate and the guest's user, system, softirq and idle time, in seconds of
# guest CPU per GB moved. compare-backends measures the host side; this is the guest's.
#
# Everything runs in a network namespace of its own (the backend or passt, and the iperf3
# server): the guest reaches 10.0.2.2, which both map to the namespace's loopback. Its only
# other interface is a veth pair whose default route leads nowhere (TEST-NET-2), which passt
# wants as its "external" interface, as in compare-backends.
# Needs root (ip netns), qemu-system-x86_64, iperf3, passt for `passt`, and the release
# backend (cargo build --release). SECONDS: per iperf3 run (default 8).
set -euo pipefail

KIND=${1:-ring}
SECS=${2:-8}
ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
BIN=${VNU_BIN:-$ROOT/target/release/vhost-net-user}
case "$KIND" in ring|passt) ;; *) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 2 ;; esac
[ "$KIND" = passt ] || [ -x "$BIN" ] || { echo "guest-cpu: $BIN missing (cargo build --release)" >&2; exit 2; }

NS=vnu-gcpu-$$
TMP=$(mktemp -d /tmp/vnu-gcpu.XXXXXX)
chmod 777 "$TMP"   # passt drops to nobody and writes its socket here
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add vnu0 type veth peer name vnu1
ip -n "$NS" link set vnu0 up
ip -n "$NS" link set vnu1 up
ip -n "$NS" addr add 198.51.100.2/24 dev vnu0
ip -n "$NS" route add default via 198.51.100.1 dev vnu0
ip netns exec "$NS" iperf3 -s -p 5201 -D -B 127.0.0.1

if [ "$KIND" = ring ]; then
  ip netns exec "$NS" "$BIN" -q --socket-path "$TMP/vu.sock" 2> "$TMP/backend.log" &
  NET=(--vhost-user "$TMP/vu.sock")
else
  ip netns exec "$NS" passt -f -q -e -s "$TMP/passt.sock" -a 10.0.2.15 -n 24 -g 10.0.2.2 2> "$TMP/passt.log" &
  NET=(-- -netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$TMP/passt.sock")
fi
for _ in $(seq 50); do [ -S "$TMP/vu.sock" ] || [ -S "$TMP/passt.sock" ] && break; sleep 0.1; done

cat > "$TMP/script" <<EOF
# cpu: user, system, softirq and idle ticks of /proc/stat's first line
cpu() { awk '/^cpu / { print \$2 + \$3, \$4, \$8, \$5 + \$6 }' /proc/stat; }
run() {
  label=\$1; shift
  a=\$(cpu)
  out=\$(iperf3 -c 10.0.2.2 -p 5201 -t $SECS -f m "\$@" 2>&1 | awk '/receiver/ { print \$5, \$6, \$7, \$8 }')
  b=\$(cpu)
  echo "\$a \$b \$out" | awk -v hz=100 -v dir="\$label" '{
    unit = \$10 == "GBytes" ? 1 : (\$10 == "MBytes" ? 1 / 1024 : 0)
    gb = \$9 * unit * 1.073741824
    if (gb == 0) { print dir, "no transfer"; exit }
    printf "%-4s %6s Mbit/s  guest s/GB: user %.3f  system %.3f  softirq %.3f  idle %.3f\n",
      dir, \$11, (\$5-\$1)/hz/gb, (\$6-\$2)/hz/gb, (\$7-\$3)/hz/gb, (\$8-\$4)/hz/gb
  }'
}
run h→g -R
run g→h
EOF
# NET last: for passt it ends with `-- QEMU_ARGS`.
"$ROOT/scripts/boot-guest.sh" --script "$TMP/script" --timeout $((SECS * 2 + 90)) "${NET[@]}" |
  sed -n 's/^run: //p'
