#!/bin/bash
# test.sh [CARGO_TEST_ARGS...] : the whole test suite, as CI runs it (.ci/run).
# Installs the Debian packages the tests use, builds the test guest and the backend (release),
# then runs `cargo test --workspace --profile test-suite`, and the end-to-end tests once more
# against Debian 13's QEMU 10 (scripts/qemu10.sh). The exit status is 0 only if both pass.
# The end-to-end tests (tests/, crate vnu-tests) boot real QEMU guests (TCG, ~10 s of one core
# each) behind target/release/vhost-net-user; they fail rather than skip when QEMU is missing.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH

scripts/need-packages.sh qemu-system-x86 busybox-static iperf3 ethtool cpio tcpdump iproute2 samba
scripts/build-guest.sh
# The backend as shipped (release: fat LTO), which the end-to-end and protocol tests run...
cargo build --release -p vhost-net-user
# Debian 13's QEMU 10, libvirt 11 and passt, in a root beside the host (built once, about a
# minute; scripts/debian13.sh).
scripts/debian13.sh --build-only >/dev/null
status=0
# ...and the tests themselves in a profile that builds faster (Cargo.toml, test-suite), against
# Debian 12's QEMU 7.2...
cargo test --workspace --profile test-suite --no-fail-fast "$@" || status=$?
# ...then every end-to-end test that boots QEMU itself once more, against Debian 13's QEMU 10.0
# (those that run libvirt or libguestfs use the root's QEMU already).
qemu10_tests=()
for test in tests/tests/e2e_*.rs; do
  test=$(basename "$test" .rs)
  case $test in
    e2e_libvirt | e2e_libguestfs) ;;
    *) qemu10_tests+=(--test "$test") ;;
  esac
done
echo "test.sh: the end-to-end tests again, against QEMU 10 (scripts/qemu10.sh)" >&2
VNU_QEMU=$PWD/scripts/qemu10.sh cargo test -p vnu-tests --profile test-suite --no-fail-fast \
  "${qemu10_tests[@]}" "$@" || status=$?
exit $status
