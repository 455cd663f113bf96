#!/bin/bash
# libvirt-root.sh DIR [PASST] : libvirtd and virtlogd of the Debian 13 root, for the libvirt
# end-to-end tests (tests/src/libvirt.rs) and scripts/libvirt-compare.sh. Runs INSIDE the root,
# as the first process of a PID namespace of its own, started as
#
#   unshare --pid --fork --kill-child scripts/debian13.sh /bin/bash DIR/libvirt-root.sh DIR [PASST]
#
# with DIR shared into the root (VNU_DEBIAN13_SHARE). Everything it changes is in its private
# mount namespace, never in the root on disk: a tmpfs on /run; private copies of /etc/libvirt,
# /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt; with PASST (a program's path), a
# tmpfs on /usr/local/bin holding the link `passt -> PASST`, which libvirtd finds first through
# its PATH. libvirtd listens on its unix socket only (no TCP, no TLS, no network autostarts, root
# only); its log, with every command line it runs, goes to DIR/libvirtd.log.
#
# It prints `ready` once libvirtd answers, then waits for its stdin to close (the caller exited,
# however it ended) or for a line on it, and exits: being the namespace's first process, its
# exit makes the kernel kill every process left in the namespace (libvirtd, virtlogd, QEMUs,
# passt, ours). Reach libvirtd with
#   nsenter -t PID -m -p -r -w env -i PATH=/usr/sbin:/usr/bin virsh -c qemu:///system ...
# where PID is this process's pid as the caller sees it.
set -euo pipefail
dir=$1
passt=${2:-}

mount -t tmpfs -o mode=0755 vnu-run /run
mkdir -m 1777 /run/lock
ln -s /dev/shm /run/shm
for d in /etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
  mkdir -p "/run/vnu-state$d"
  cp -a "$d/." "/run/vnu-state$d/"
  mount --bind "/run/vnu-state$d" "$d"
done
if [ -n "$passt" ]; then
  mount -t tmpfs -o mode=0755 vnu-local-bin /usr/local/bin
  ln -s "$passt" /usr/local/bin/passt
fi

cat > /etc/libvirt/libvirtd.conf <<EOF
listen_tls = 0
listen_tcp = 0
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_filters = "1:util.command 1:qemu.qemu_passt 3:*"
log_outputs = "1:file:$dir/libvirtd.log"
EOF
rm -f /etc/libvirt/qemu/networks/autostart/*

virtlogd &
libvirtd &
for _ in $(seq 600); do
  if virsh -q -c qemu:///system version > /dev/null 2>&1; then
    echo ready
    # Until the caller closes our stdin (or writes a line). bash reaps the QEMUs and passts that
    # end meanwhile (orphans come to the namespace's first process).
    read -r _ || true
    exit 0
  fi
  sleep 0.1
done
echo "libvirt-root.sh: libvirtd did not answer within 60 s" >&2
exit 1
