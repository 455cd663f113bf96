#!/bin/bash
# test.sh [CARGO_TEST_ARGS...] : the whole test suite, as CI runs it (.ci/run).
# Installs the Debian packages the tests use, builds the test guest and the backend (release),
# then runs `cargo test --workspace --profile test-suite`. The exit status is the tests'.
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
# ...and the tests themselves in a profile that builds faster (Cargo.toml, test-suite).
exec cargo test --workspace --profile test-suite --no-fail-fast "$@"
