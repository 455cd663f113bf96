#!/bin/bash
# libvirt9-check.sh [DEB] : checks docs/libvirt.md's "libvirt 9.0 (Debian 12)" setup with
# Debian 12's own libvirt 9.0 and QEMU 7.2, in a Debian 12 root of its own
# ($VNU_DEBIAN12_ROOT, default /var/tmp/vnu-debian12-libvirt; built once, about a minute).
#
# Installs DEB (default: the newest target/debian/vhost-net-user_*.deb, scripts/build-deb.sh)
# in the root, starts virtlogd and libvirtd there, and the backend as the systemd unit does
# (as root, socket /run/vhost-net-user/guest1.sock), then boots the test guest
# (scripts/build-guest.sh) as a libvirt domain with <interface type='vhostuser'>, twice:
#   1. without --socket-owner: QEMU (user libvirt-qemu) must be refused the socket;
#   2. with --socket-owner libvirt-qemu: the guest must get 169.254.2.15/16 from
#      --slirp net=169.254.0.0/16 and ping its gateway.
# Prints the guest's report; exit status 0 when both hold. Needs root. The root is entered
# with unshare --mount and pivot_root, as scripts/debian13.sh does; /tmp stays the root's own.
set -euo pipefail
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
ROOT=${VNU_DEBIAN12_ROOT:-/var/tmp/vnu-debian12-libvirt}
MIRROR=${VNU_DEBIAN12_MIRROR:-http://deb.debian.org/debian}
PACKAGES="qemu-system-x86 ipxe-qemu seabios libvirt-daemon-system libvirt-daemon-driver-qemu \
libvirt-clients procps"
STAMP=$ROOT/.vnu-root

[ "$(id -u)" = 0 ] || { echo "libvirt9-check: needs root" >&2; exit 1; }
DEB=${1:-$(ls -t "$HERE"/../target/debian/vhost-net-user_*.deb 2>/dev/null | head -n 1 || true)}
[ -f "$DEB" ] || { echo "libvirt9-check: no package; run scripts/build-deb.sh" >&2; exit 1; }
CACHE=${VNU_GUEST_CACHE:-/var/tmp/vnu-guest}
"$HERE/build-guest.sh" >&2

enter() {
  local root=$1
  shift
  unshare --mount --propagation private -- /bin/bash -c '
    set -euo pipefail
    root=$1
    shift
    mount --rbind "$root" "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    cd "$root"
    mkdir -p .oldroot
    pivot_root . .oldroot
    umount -l /.oldroot
    cd /
    exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root TERM=dumb "$@"
  ' libvirt9-enter "$root" "$@"
}

build() {
  "$HERE/need-packages.sh" debootstrap
  local fresh=$ROOT.new
  rm -rf "$fresh"
  echo "libvirt9-check: building the Debian 12 root in $ROOT (about a minute)" >&2
  debootstrap --variant=minbase bookworm "$fresh" "$MIRROR" >&2
  cat > "$fresh/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  printf '#!/bin/sh\nexit 101\n' > "$fresh/usr/sbin/policy-rc.d"
  chmod 755 "$fresh/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$fresh/etc/resolv.conf"
  enter "$fresh" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $PACKAGES" >&2
  echo "$PACKAGES" > "$fresh/.vnu-root"
  rm -rf "$ROOT"
  mv "$fresh" "$ROOT"
}

(
  flock 9
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PACKAGES" ]; then
    build
  fi
) 9< "${BASH_SOURCE[0]}"

# The guest's files are copied in: libvirt gives what a domain boots from to libvirt-qemu.
mkdir -p "$ROOT/var/lib/libvirt/images"
cp -f "$CACHE/vmlinuz" "$CACHE/initrd.gz" "$ROOT/var/lib/libvirt/images/"
cp -f "$DEB" "$ROOT/root/vhost-net-user.deb"

# The domain of docs/libvirt.md, booting the test guest under TCG (hence vectors=0: QEMU 7.2
# crashes with MSI-X on a vhost-user network device there).
cat > "$ROOT/root/guest1.xml" <<'XML'
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>guest1</name>
  <memory unit='MiB'>512</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/images/vmlinuz</kernel>
    <initrd>/var/lib/libvirt/images/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet loglevel=1 panic=-1 vnu.v6wait=3</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <interface type='vhostuser'>
      <mac address='52:54:00:41:2c:49'/>
      <source type='unix' path='/run/vhost-net-user/guest1.sock' mode='client'>
        <reconnect enabled='yes' timeout='5'/>
      </source>
      <model type='virtio'/>
      <alias name='ua-net0'/>
    </interface>
    <serial type='file'>
      <source path='/var/log/guest1-console.log'/>
    </serial>
  </devices>
  <qemu:override>
    <qemu:device alias='ua-net0'>
      <qemu:frontend>
        <qemu:property name='vectors' type='unsigned' value='0'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
XML

cat > "$ROOT/root/libvirt9-run.sh" <<'RUN'
#!/bin/bash
# Inside the root: both cases; prints "case1=refused" and "case2=bound" when they hold.
set -uo pipefail
V="virsh -q -c qemu:///system"
LOG=/var/log/libvirt/qemu/guest1.log
dpkg -i /root/vhost-net-user.deb >/dev/null
virtlogd -d
libvirtd -d
for _ in $(seq 100); do $V version >/dev/null 2>&1 && break; sleep 0.2; done
$V version | head -n 2
# What the unit does: RuntimeDirectory=vhost-net-user, then ExecStart.
mkdir -p /run/vhost-net-user
chmod 755 /run/vhost-net-user
BACKEND=
stop_backend() {
  [ -n "$BACKEND" ] && kill "$BACKEND" 2>/dev/null && wait "$BACKEND"
  BACKEND=
  rm -f /run/vhost-net-user/guest1.sock
}
start_backend() {
  /usr/bin/vhost-net-user --socket-path /run/vhost-net-user/guest1.sock "$@" \
    --slirp net=169.254.0.0/16 >> /root/backend.log 2>&1 &
  BACKEND=$!
  for _ in $(seq 100); do [ -S /run/vhost-net-user/guest1.sock ] && break; sleep 0.1; done
  ls -l /run/vhost-net-user/guest1.sock
}
$V destroy guest1 >/dev/null 2>&1
$V undefine guest1 >/dev/null 2>&1
$V define /root/guest1.xml >/dev/null

echo "== 1. backend started as root, no --socket-owner"
start_backend
: > "$LOG"
# QEMU keeps reconnecting, so `virsh start` does not return: it runs in the background.
$V start guest1 >/dev/null 2>&1 &
START=$!
refused=0
for _ in $(seq 120); do
  grep -q "guest1.sock': Permission denied" "$LOG" && { refused=1; break; }
  sleep 0.5
done
grep -o "Failed to connect to .*" "$LOG" | head -n 1
$V destroy guest1 >/dev/null 2>&1
wait "$START"
stop_backend
[ "$refused" = 1 ] && echo "case1=refused"

echo "== 2. backend started as root with --socket-owner libvirt-qemu"
start_backend --socket-owner libvirt-qemu
rm -f /var/log/guest1-console.log
$V start guest1
for _ in $(seq 240); do
  grep -q '^=== VNU-GUEST END' /var/log/guest1-console.log 2>/dev/null && break
  sleep 0.5
done
tr -d '\r' < /var/log/guest1-console.log 2>/dev/null |
  sed -n '/=== VNU-GUEST BEGIN/,/=== VNU-GUEST END/p' | grep -E '^(dhcp\.(ip|mask|router)|guest\.(addr|gw|gw_ping|gw_mac))='
$V destroy guest1 >/dev/null 2>&1
$V undefine guest1 >/dev/null
stop_backend
tr -d '\r' < /var/log/guest1-console.log 2>/dev/null |
  grep -qx 'guest.addr=169.254.2.15/16' &&
  tr -d '\r' < /var/log/guest1-console.log | grep -qx 'guest.gw_ping=ok' && echo "case2=bound"
LIBVIRTD=$(cat /run/libvirtd.pid)
kill "$LIBVIRTD" "$(cat /run/virtlogd.pid)" 2>/dev/null
# libvirtd can take a while to exit after a start (it finishes probing QEMU first).
for _ in $(seq 120); do kill -0 "$LIBVIRTD" 2>/dev/null || break; sleep 0.5; done
RUN
chmod 755 "$ROOT/root/libvirt9-run.sh"

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
enter "$ROOT" /root/libvirt9-run.sh | tee "$OUT"
grep -qx case1=refused "$OUT" && grep -qx case2=bound "$OUT"
