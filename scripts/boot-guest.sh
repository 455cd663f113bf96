#!/bin/bash
# boot-guest.sh [OPTIONS] [-- QEMU_ARGS...]
#
# Boots the test guest (scripts/build-guest.sh; built first if needed) under QEMU with TCG and
# prints what it reports: the lines between `=== VNU-GUEST BEGIN` and `=== VNU-GUEST END`
# (`dhcp.*=` and `guest.*=` key lines, then `run: ` lines from --script).
# Exit status 0 when the guest got to its END marker, 1 otherwise.
#
# The network, one of:
#   --user[=OPTS]          QEMU slirp: -netdev user,id=n0[,OPTS]   (the default)
#   --vhost-user SOCK      a vhost-user backend listening on SOCK: shared guest memory (memfd),
#                          -chardev socket + -netdev vhost-user, and vectors=0 on the device
#                          (QEMU 7.2 under TCG crashes with MSI-X on a vhost-user net device)
#   -- QEMU_ARGS...        your own args defining a netdev with id=n0 (e.g. -netdev stream,...);
#                          add --shared-mem / --vectors N as that netdev needs
# Options:
#   --script FILE          run FILE (sh) in the guest after the network checks ('-' = stdin)
#   --mac MAC              guest MAC (default 52:54:00:41:2c:49)
#   --v6wait SECONDS       how long the guest waits for a SLAAC address (default 3)
#   --reconnect            with --vhost-user: chardev reconnect=1 (QEMU waits for the backend)
#   --smp N                vCPUs (default 1)
#   --queues N             with --vhost-user: N queue pairs (queues=N on the netdev, mq=on on
#                          the device)
#   --timeout SECONDS      kill QEMU after this long (default 180)
#   --console FILE         also save the whole serial console there
#   --full                 print the whole console, not only the marker section
#   --network-boot DIR     boot through the device's iPXE ROM (-boot n), not -kernel: puts the
#                          kernel, initrd and boot.ipxe (which fetches them from 10.0.2.2) in DIR;
#                          serve DIR by TFTP (tftp=DIR,bootfile=boot.ipxe, for slirp or backend)
#
# tests/src/qemu.rs (the vnu-tests harness) builds the same QEMU command line; keep them alike.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
CACHE=${VNU_GUEST_CACHE:-/var/tmp/vnu-guest}
QEMU=${VNU_QEMU:-qemu-system-x86_64}
MODE=user USER_OPTS='' SOCK='' SCRIPT='' MAC=52:54:00:41:2c:49 V6WAIT=3 RECONNECT='' TIMEOUT=180
CONSOLE='' FULL=0 SHARED_MEM=0 VECTORS='' EXTRA=() NETBOOT='' SMP=1 QUEUES=''

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --user) MODE=user; shift ;;
    --user=*) MODE=user; USER_OPTS=${1#--user=}; shift ;;
    --vhost-user) MODE=vhost-user; SOCK=$2; shift 2 ;;
    --script) SCRIPT=$2; shift 2 ;;
    --mac) MAC=$2; shift 2 ;;
    --v6wait) V6WAIT=$2; shift 2 ;;
    --reconnect) RECONNECT=,reconnect=1; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --console) CONSOLE=$2; shift 2 ;;
    --full) FULL=1; shift ;;
    --network-boot) NETBOOT=$2; shift 2 ;;
    --shared-mem) SHARED_MEM=1; shift ;;
    --vectors) VECTORS=$2; shift 2 ;;
    --smp) SMP=$2; shift 2 ;;
    --queues) QUEUES=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; MODE=raw; EXTRA=("$@"); break ;;
    *) echo "boot-guest: unknown option $1" >&2; usage ;;
  esac
done

command -v "$QEMU" > /dev/null || { echo "boot-guest: $QEMU not found (apt-get install qemu-system-x86)" >&2; exit 1; }
"$HERE/build-guest.sh"

TMP=$(mktemp -d /tmp/vnu-boot.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

NET=()
case "$MODE" in
  user) NET=(-netdev "user,id=n0${USER_OPTS:+,$USER_OPTS}") ;;
  vhost-user)
    [ -S "$SOCK" ] || [ -n "$RECONNECT" ] || { echo "boot-guest: no socket at $SOCK" >&2; exit 1; }
    SHARED_MEM=1; VECTORS=${VECTORS:-0}
    NET=(-chardev "socket,id=c0,path=$SOCK$RECONNECT" -netdev "vhost-user,id=n0,chardev=c0${QUEUES:+,queues=$QUEUES}") ;;
  raw) NET=("${EXTRA[@]}") ;;
esac
MEM=()
if [ "$SHARED_MEM" = 1 ]; then
  MEM=(-object "memory-backend-memfd,id=mem0,size=512M,share=on" -machine memory-backend=mem0)
fi

APPEND="console=ttyS0 quiet loglevel=1 panic=-1 vnu.v6wait=$V6WAIT"
FWCFG=()
if [ -n "$SCRIPT" ]; then
  if [ "$SCRIPT" = - ]; then cat > "$TMP/run.sh"; else cp "$SCRIPT" "$TMP/run.sh"; fi
  base64 -w0 < "$TMP/run.sh" > "$TMP/run.b64"
  # The kernel command line holds 2048 bytes; longer scripts (and any, when the command line
  # comes from boot.ipxe) go through fw_cfg.
  if [ -z "$NETBOOT" ] && [ "$(stat -c %s "$TMP/run.b64")" -le 1500 ]; then
    APPEND="$APPEND vnu.run=$(cat "$TMP/run.b64")"
  else
    FWCFG=(-fw_cfg "name=opt/vnu/run,file=$TMP/run.b64")
  fi
fi

BOOT=(-kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.gz" -append "$APPEND") ROM=romfile=,
if [ -n "$NETBOOT" ]; then
  mkdir -p "$NETBOOT"
  # Copies: the backend's TFTP server follows no symbolic link below its root.
  cp -f "$CACHE/vmlinuz" "$NETBOOT/vmlinuz"
  cp -f "$CACHE/initrd.gz" "$NETBOOT/initrd.gz"
  printf '#!ipxe\nkernel tftp://10.0.2.2/vmlinuz %s\ninitrd tftp://10.0.2.2/initrd.gz\nboot\n' \
    "$APPEND" > "$NETBOOT/boot.ipxe"
  BOOT=(-boot n) ROM=''
fi

set +e
timeout -k 5 "$TIMEOUT" "$QEMU" -accel tcg -m 512 "${MEM[@]}" -smp "$SMP" \
  -nodefaults -no-reboot -display none \
  -chardev stdio,id=ser0,signal=on -serial chardev:ser0 \
  "${BOOT[@]}" "${FWCFG[@]}" \
  "${NET[@]}" \
  -device "virtio-net-pci,netdev=n0,${ROM}mac=$MAC${VECTORS:+,vectors=$VECTORS}${QUEUES:+,mq=on}" \
  < /dev/null 2>&1 | tr -d '\r' | tee "$TMP/console" |
  if [ "$FULL" = 1 ]; then cat; else sed -un '/^=== VNU-GUEST BEGIN/,/^=== VNU-GUEST END/p'; fi
status=("${PIPESTATUS[@]}")
set -e
[ -n "$CONSOLE" ] && cp "$TMP/console" "$CONSOLE"
if ! grep -q '^=== VNU-GUEST END' "$TMP/console"; then
  if [ "${status[0]}" = 124 ]; then
    echo "boot-guest: timed out after ${TIMEOUT}s" >&2
  else
    echo "boot-guest: the guest did not finish (qemu exit ${status[0]})" >&2
  fi
  [ "$FULL" = 1 ] || tail -n 30 "$TMP/console" | sed 's/^/console: /' >&2
  exit 1
fi
