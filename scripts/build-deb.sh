#!/bin/bash
# build-deb.sh : builds the Debian package of vhost-net-user and prints the .deb's path.
# The release binary (cargo build --release -p vhost-net-user), the man page and shell
# completions generated from its command line (the dist/ generator, into target/dist), then
# `cargo deb` (installed with `cargo install cargo-deb --locked` when missing) packages them
# with the systemd unit dist/systemd/vhost-net-user@.service and the docs, as
# target/debian/vhost-net-user_VERSION-1_ARCH.deb. Install it with dpkg -i (apt-get -f install
# if dependencies are missing); scripts/passt-alias.sh then makes it the `passt` libvirt runs.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH

if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked >&2
fi
echo "== building the backend (cargo build --release -p vhost-net-user)" >&2
cargo build --release -p vhost-net-user >&2
echo "== man page and completions (target/dist)" >&2
rm -rf target/dist
cargo run -q -p vnu-dist -- target/dist >&2
echo "== packaging (cargo deb)" >&2
# The files' dates in the package: the commit's (reproducible), or now for uncommitted
# changes. cargo-deb's own default, the day, would let man-db keep serving a page it formatted
# from an earlier package of the same day.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  if git diff --quiet HEAD 2>/dev/null; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
  else
    SOURCE_DATE_EPOCH=$(date +%s)
  fi
  export SOURCE_DATE_EPOCH
fi
# cargo deb prints the path of the package it wrote, on stdout.
# The release profile keeps debug information (debug = 1); the packaged binary is stripped.
cargo deb -p vhost-net-user --no-build --strip
