#!/bin/bash
# fuzz.sh TARGET [SECONDS] [LIBFUZZER_ARGS...] : runs one cargo-fuzz target (fuzz/fuzz_targets/)
# for SECONDS (default 300), one process, niced. Targets: ring engine dhcp dhcpv6 ndp tftp.
# Needs the nightly toolchain and a C++ compiler (libFuzzer); installs cargo-fuzz if missing.
# The committed corpus (fuzz/corpus/TARGET) seeds the run; what the run finds goes to
# fuzz/target/corpus/TARGET (not committed: minimise with `cargo +nightly fuzz cmin` before
# adding any of it). A crash is saved under fuzz/artifacts/TARGET/ and ends the run, status 1.
# SANITIZER=address runs under AddressSanitizer (about 3 times slower); the default is none:
# the code fuzzed is safe Rust but for the small sys.rs modules, and debug assertions and
# overflow checks are on either way.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH

TARGET=${1:?usage: fuzz.sh TARGET [SECONDS] [LIBFUZZER_ARGS...]}
SECONDS_TO_RUN=${2:-300}
shift $(( $# < 2 ? $# : 2 ))
if [ ! -f "fuzz/fuzz_targets/$TARGET.rs" ]; then
    echo "fuzz.sh: no target '$TARGET' (have: $(ls fuzz/fuzz_targets | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 2
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
mkdir -p "fuzz/corpus/$TARGET" "fuzz/target/corpus/$TARGET"
# -timeout: one input taking 10 s is a hang. -rss_limit_mb: memory that grows is a leak.
exec nice -n 19 cargo +nightly fuzz run --sanitizer "${SANITIZER:-none}" --debug-assertions \
    "$TARGET" "fuzz/target/corpus/$TARGET" "fuzz/corpus/$TARGET" -- \
    -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$@"
