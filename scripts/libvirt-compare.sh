#!/bin/bash
# libvirt-compare.sh : the seed's domain under real libvirt, side by side, as the README shows it.
#
# Boots the test guest through libvirt 11.3 and QEMU 10.0 from the Debian 13 root
# (scripts/debian13.sh builds it on first use; needs root) with
# <ip family='ipv4' address='169.254.0.0' prefix='16'/> five ways: QEMU slirp (type='user'),
# Debian 13's passt and this program as libvirt's passt, each with type='user' and
# type='vhostuser' + <backend type='passt'/>. It is the e2e test seed_domain_as_slirp
# (tests/tests/e2e_libvirt.rs), which also asserts that this program gives slirp's view; this
# prints its table (Markdown) and the passt command lines libvirt ran. The test's own messages
# go to $TMPDIR/libvirt-compare.log. About 1-3 minutes (TCG boots).
set -euo pipefail
repo=$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")
cd "$repo"
log=${TMPDIR:-/tmp}/libvirt-compare.log
cargo build --release -q -p vhost-net-user
status=0
cargo test -q -p vnu-tests --profile test-suite --test e2e_libvirt seed_domain_as_slirp \
  -- --exact --nocapture > "$log.out" 2> "$log" || status=$?
awk '/^The seed.s domain/ { on = 1 }
  on && /^(The seed|[|]|Debian 13 passt|vhost-net-user as passt|$)/' "$log.out"
cat "$log.out" >> "$log"
rm -f "$log.out"
if [ "$status" != 0 ]; then
  echo "libvirt-compare.sh: the test failed (exit $status); see $log" >&2
fi
exit "$status"
