#!/bin/bash
# build-guest.sh [--force]
#
# Builds the end-to-end test guest from Debian packages only:
#   vmlinuz    the kernel of Debian's linux-image-amd64 (downloaded and unpacked, never installed)
#   initrd.gz  a busybox-static initramfs with the virtio-net modules, iperf3, ethtool and their
#              libraries, and the SMB client modules (not loaded at boot: a script that mounts a
#              share loads the ones /etc/cifs-modules lists, in that order, with insmod)
# into ${VNU_GUEST_CACHE:-/var/tmp/vnu-guest}. The result is kept there and rebuilt only when
# this script changes (its sha256 is stored in the cache as `stamp`) or with --force.
# Missing Debian packages are installed (as root; apt-get update first).
#
# What the guest does at boot (see the init below): loads the virtio modules, brings up lo and
# eth0, runs udhcpc, prints what it sees as `dhcp.*=` and `guest.*=` lines, runs the optional
# script given base64-encoded as `vnu.run=` on the kernel command line (or, for long scripts, as
# the fw_cfg file opt/vnu/run) with its output lines prefixed `run: `, then powers off.
# Everything it prints for the host lies between the lines `=== VNU-GUEST BEGIN` and
# `=== VNU-GUEST END`. Kernel command line knobs: vnu.v6wait=SECONDS (how long to wait for a
# SLAAC address, default 3), vnu.run=BASE64.
#
# scripts/boot-guest.sh boots it; the vnu-tests crate (tests/src/image.rs) uses it too.
set -euo pipefail

CACHE=${VNU_GUEST_CACHE:-/var/tmp/vnu-guest}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
FORCE=0
case "${1:-}" in
  --force) FORCE=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# The modules virtio_net needs, in dependency order.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         failover net_failover virtio_net qemu_fw_cfg)
# The SMB client (mount -t cifs, for smb= tests), in dependency order; loaded on demand.
CIFS_MODULES=(netfs fscache dns_resolver cifs_md4 cifs_arc4 cifs)

say() { echo "build-guest: $*" >&2; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # concurrent callers (parallel test processes) wait for one build

rm -rf "$CACHE"/build.*   # left by a build that was killed
want=$(sha256sum "$SELF" | cut -d' ' -f1)
if [ "$FORCE" = 0 ] && [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.gz" ] &&
   [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
}

"$(dirname "$SELF")/need-packages.sh" busybox-static iperf3 ethtool cpio gzip

kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
KPKG=$(kernel_package)
if [ -z "$KPKG" ]; then
  apt_update
  KPKG=$(kernel_package)
fi
[ -n "$KPKG" ] || { say "cannot resolve linux-image-amd64 to a kernel package"; exit 1; }

# Downloaded kernel packages stay in the cache, so a rebuild after editing this script is quick.
mkdir -p "$CACHE/debs"
DEB=$(ls "$CACHE/debs/${KPKG}"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$DEB" ]; then
  say "downloading $KPKG"
  rm -f "$CACHE"/debs/*.deb
  download() { (cd "$CACHE/debs" && apt-get -q -o APT::Sandbox::User=root download "$KPKG" >&2); }
  # Stale package lists name versions the mirror no longer has: update and retry once.
  download || { apt_update; KPKG=$(kernel_package); download; }
  DEB=$(ls "$CACHE/debs/${KPKG}"_*.deb | head -1)
fi

WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say "unpacking $(basename "$DEB")"
dpkg -x "$DEB" "$WORK/k"
KVER=$(ls "$WORK/k/lib/modules" | head -1)
KDIR=$WORK/k/lib/modules/$KVER

IR=$WORK/ir
mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,etc,tmp,run,root,lib/modules,lib64}
cp /bin/busybox "$IR/bin/busybox"
for m in "${MODULES[@]}" "${CIFS_MODULES[@]}"; do
  f=$(find "$KDIR" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { say "module $m not found in $KPKG"; exit 1; }
  case "$f" in
    *.ko) cp "$f" "$IR/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" > "$IR/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$IR/lib/modules/$m.ko" ;;
    *) say "unknown module format: $f"; exit 1 ;;
  esac
done

# iperf3 (throughput) and ethtool (which offloads the driver negotiated), with the shared
# libraries they load, at the same paths as on the host.
copy_with_libs() {
  local bin=$1 lib
  mkdir -p "$IR$(dirname "$bin")"
  cp -L "$bin" "$IR$bin"
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$IR$(dirname "$lib")"
    cp -L "$lib" "$IR$lib"
  done
}
copy_with_libs /usr/bin/iperf3
copy_with_libs "$(command -v ethtool)"

echo "${CIFS_MODULES[*]}" > "$IR/etc/cifs-modules"

cat > "$IR/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat > "$IR/etc/group" <<'EOF'
root:x:0:
EOF
echo "hosts: files dns" > "$IR/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$IR/etc/hosts"

# udhcpc's event script: configures eth0 and reports the lease. busybox gives `mask` as a
# prefix length and `subnet` as a dotted mask.
cat > "$IR/etc/udhcpc.sh" <<'EOF'
#!/bin/sh
case "$1" in
  deconfig)
    # IPv4 only: the IPv6 addresses (link-local, SLAAC) are not the DHCPv4 client's.
    ip -4 addr flush dev "$interface" 2>/dev/null
    ;;
  bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    [ -n "$search$domain" ] && echo "search ${search:-$domain}" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "dhcp.event=$1"
    for k in ip mask subnet router dns lease serverid mtu domain search hostname siaddr \
             broadcast boot_file; do
      eval "v=\${$k-}"
      echo "dhcp.$k=$v"
    done
    echo "guest.uptime_bound=$(cut -d' ' -f1 /proc/uptime)"
    ;;
esac
exit 0
EOF
chmod +x "$IR/etc/udhcpc.sh"

cat > "$IR/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts

# arg NAME: the value of NAME= on the kernel command line.
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | head -1; }
oneline() { sed 's/  */ /g; s/ *$//'; }

for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         failover net_failover virtio_net qemu_fw_cfg; do
  [ -d "/sys/module/$m" ] || insmod "/lib/modules/$m.ko" 2>/tmp/insmod.err ||
    echo "$m: $(cat /tmp/insmod.err)" >> /tmp/modules.err
done
ip link set lo up
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
ip link set eth0 up 2>/dev/null

echo "=== VNU-GUEST BEGIN"
echo "guest.kernel=$(uname -r)"
[ -s /tmp/modules.err ] && sed 's/^/guest.module_error=/' /tmp/modules.err
if [ ! -e /sys/class/net/eth0 ]; then
  echo "guest.error=no eth0"
fi
echo "guest.mac=$(cat /sys/class/net/eth0/address 2>/dev/null)"
echo "guest.uptime_dhcp_start=$(cut -d' ' -f1 /proc/uptime)"
if udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 8 -T 2 -O mtu -O search -O hostname 2>/tmp/udhcpc.err; then
  echo "dhcp.status=bound"
else
  echo "dhcp.status=fail"
  sed 's/^/guest.udhcpc=/' /tmp/udhcpc.err
fi
echo "guest.carrier=$(cat /sys/class/net/eth0/carrier 2>/dev/null)"
echo "guest.mtu=$(cat /sys/class/net/eth0/mtu 2>/dev/null)"
echo "guest.addr=$(ip -o -4 addr show dev eth0 | awk '{ print $4; exit }')"
GW=$(ip route | awk '$1 == "default" { print $3; exit }')
echo "guest.gw=$GW"
if [ -n "$GW" ] && ping -c 2 -W 2 "$GW" > /dev/null 2>&1; then
  echo "guest.gw_ping=ok"
else
  echo "guest.gw_ping=fail"
fi
if [ -n "$GW" ]; then
  echo "guest.gw_mac=$(ip neigh show "$GW" | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')"
fi
ip route | oneline | sed 's/^/guest.route=/'
sed -n 's/^nameserver /guest.resolv_ns=/p' /etc/resolv.conf 2>/dev/null

# IPv6: SLAAC needs a router advertisement; wait vnu.v6wait seconds at most for one.
V6WAIT=$(arg vnu.v6wait); V6WAIT=${V6WAIT:-3}
# (slirp's fec0::/64 is site-scoped, so "not link-local" rather than "scope global".)
addr6() { ip -6 addr show dev eth0 | awk '$1 == "inet6" && $2 !~ /^fe80:/ { print $2 }'; }
i=0
while [ "$i" -lt "$V6WAIT" ] && [ -z "$(addr6)" ]; do
  sleep 1; i=$((i + 1))
done
addr6 | sed 's/^/guest.addr6=/'
ip -6 route show default | sed 's/ proto [a-z]*//; s/ expires [0-9a-z]*//; s/ metric [0-9]*//; s/ pref [a-z]*//' |
  oneline | sed 's/^/guest.route6=/'

# The optional test script: base64 on the command line, or a fw_cfg file for long ones.
RUN=$(arg vnu.run)
FWCFG=/sys/firmware/qemu_fw_cfg/by_name/opt/vnu/run/raw
if [ -n "$RUN" ]; then
  echo "$RUN" | base64 -d > /tmp/run.sh
elif [ -r "$FWCFG" ]; then
  base64 -d < "$FWCFG" > /tmp/run.sh
fi
if [ -s /tmp/run.sh ]; then
  echo "guest.uptime_run=$(cut -d' ' -f1 /proc/uptime)"
  { sh /tmp/run.sh < /dev/null 2>&1; echo "$?" > /tmp/run.status; } | sed 's/^/run: /'
  echo "guest.run_status=$(cat /tmp/run.status)"
fi
echo "guest.uptime_end=$(cut -d' ' -f1 /proc/uptime)"
echo "=== VNU-GUEST END"
poweroff -f
EOF
chmod +x "$IR/init"

say "packing initramfs ($KVER)"
(cd "$IR" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) > "$WORK/initrd.gz"
cp "$WORK/k/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
mv -f "$WORK/vmlinuz" "$CACHE/vmlinuz"
mv -f "$WORK/initrd.gz" "$CACHE/initrd.gz"
echo "$KVER" > "$CACHE/kernel-version"
echo "$want" > "$CACHE/stamp"
say "guest ready in $CACHE (kernel $KVER)"
