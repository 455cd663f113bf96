#!/bin/bash
# capture-slirp-fixtures.sh [OUT_DIR]
#
# Records what QEMU's own user-mode network (slirp, -netdev user) answers to the test guest, as
# the reference the byte-level protocol tests (netcore/tests/slirp_replay.rs) replay against
# the engine. Boots the test guest (scripts/boot-guest.sh, scripts/build-guest.sh) behind
# `-netdev user` with a filter-dump on the netdev, so the pcap holds every frame both ways:
#   at boot          ARP for the gateway, DHCP (discover/offer/request/ack), two pings to
#                    10.0.2.2, the kernel's router solicitations and the advertisement (SLAAC)
#   then (the script) a ping to fec0::2 (with the neighbour solicitation before it), a DHCPv6
#                    Information-Request to ff02::1:2 and one to fec0::2, and a TFTP read of a
#                    two-block file from 10.0.2.2
# into OUT_DIR (default netcore/tests/fixtures): slirp.pcap, and slirp-bootfile.pcap from a
# second boot with bootfile=two-blocks.txt. The TFTP root is OUT_DIR/slirp-tftp, which the
# replay serves too. The guest MAC is boot-guest.sh's default,
# 52:54:00:41:2c:49. Exit status 0 only when every step worked in the guest.
#
# Run it again when QEMU changes and review the replay tests' result before committing.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
OUT=$(readlink -f "${1:-$HERE/../netcore/tests/fixtures}")
TFTP_ROOT=$OUT/slirp-tftp
GUEST_MAC=52:54:00:41:2c:49

mkdir -p "$OUT" "$TFTP_ROOT"
# 700 bytes: a full 512-byte block, then a short one.
if [ ! -s "$TFTP_ROOT/two-blocks.txt" ]; then
  for i in $(seq 1 100); do printf 'line %03d\n' "$i"; done | head -c 700 > "$TFTP_ROOT/two-blocks.txt"
fi

TMP=$(mktemp -d /tmp/vnu-capture.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# The guest's busybox has no UDP client, so a small static one goes in with the script:
# udp6send SRCPORT DST DSTPORT HEX sends one datagram (scope eth0) and waits 3 s for an answer.
command -v gcc > /dev/null || { echo "capture: gcc needed (apt-get install gcc libc6-dev)" >&2; exit 1; }
cat > "$TMP/udp6send.c" <<'C'
#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: udp6send SRCPORT DST DSTPORT HEX\n"); return 2; }
  unsigned char msg[512], reply[2048];
  size_t n = 0;
  for (const char *p = argv[4]; p[0] && p[1] && n < sizeof msg; p += 2) {
    char b[3] = {p[0], p[1], 0};
    msg[n++] = (unsigned char)strtoul(b, NULL, 16);
  }
  int s = socket(AF_INET6, SOCK_DGRAM, 0);
  struct sockaddr_in6 src = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[1]))};
  struct sockaddr_in6 dst = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[3]))};
  if (inet_pton(AF_INET6, argv[2], &dst.sin6_addr) != 1) return 2;
  dst.sin6_scope_id = if_nametoindex("eth0");
  struct timeval tv = {.tv_sec = 3};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (bind(s, (struct sockaddr *)&src, sizeof src) < 0) { perror("bind"); return 1; }
  if (sendto(s, msg, n, 0, (struct sockaddr *)&dst, sizeof dst) < 0) { perror("sendto"); return 1; }
  if (recv(s, reply, sizeof reply, 0) < 0) { perror("recv"); return 1; }
  return 0;
}
C
gcc -static -Os -s -o "$TMP/udp6send" "$TMP/udp6send.c"

# A DHCPv6 Information-Request (RFC 8415 18.2.6): transaction 0x0a0b0c, the client's DUID-LL,
# an option request for DNS servers (23) and the boot-file URL (59), elapsed time 0.
request="0b0a0b0c 0001000a00030001${GUEST_MAC//:/} 00060004 0017003b 000800020000"
request=${request// /}

{
  echo "base64 -d > /tmp/udp6send.gz <<'B64'"
  gzip -9 -c "$TMP/udp6send" | base64 -w 76
  echo "B64"
  cat <<SCRIPT
gunzip /tmp/udp6send.gz && chmod +x /tmp/udp6send
# Each step reports cap.NAME=0 when it worked.
ping6 -c 1 -W 3 fec0::2 > /dev/null 2>&1; echo cap.ping6=\$?
for dst in ff02::1:2 fec0::2; do
  /tmp/udp6send 546 \$dst 547 $request; echo cap.dhcpv6.\$dst=\$?
done
tftp -g -r two-blocks.txt -l /tmp/got 10.0.2.2 > /dev/null 2>&1; echo cap.tftp=\$?
echo cap.tftp_bytes=\$(wc -c < /tmp/got)
SCRIPT
} > "$TMP/run.sh"

# capture NAME [NETDEV_OPTS]: one boot, recorded into OUT/NAME.pcap.
capture() {
  local pcap=$OUT/$1.pcap
  rm -f "$pcap"
  "$HERE/boot-guest.sh" --mac "$GUEST_MAC" --v6wait 10 --script "$TMP/run.sh" -- \
    -netdev "user,id=n0,tftp=$TFTP_ROOT${2:+,$2}" \
    -object "filter-dump,id=dump0,netdev=n0,file=$pcap" > "$TMP/report" || true
  local failed=0
  for want in dhcp.status=bound guest.gw_ping=ok "run: cap.ping6=0" "run: cap.dhcpv6.ff02::1:2=0" \
              "run: cap.dhcpv6.fec0::2=0" "run: cap.tftp=0" "run: cap.tftp_bytes=700"; do
    grep -qxF "$want" "$TMP/report" || { echo "capture $1: missing $want" >&2; failed=1; }
  done
  grep -q '^guest.addr6=fec0::' "$TMP/report" || { echo "capture $1: no SLAAC address" >&2; failed=1; }
  [ "$failed" = 0 ] || { cat "$TMP/report" >&2; return 1; }
  echo "capture: $pcap ($(stat -c %s "$pcap") bytes)" >&2
}

capture slirp
# With a boot file: DHCPv4 names it (option 67) and DHCPv6 gives its URL (option 59).
capture slirp-bootfile bootfile=two-blocks.txt
