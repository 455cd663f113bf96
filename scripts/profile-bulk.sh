#!/bin/bash
# profile-bulk.sh BACKEND [host-to-guest|guest-to-host] [SECONDS]
# Profiles one backend of compare-backends (vnu-ring or passt13-vu) during one direction of its
# bulk TCP test through the TCG guest: runs `compare-backends --only BACKEND --tests bulk
# --runs 1 --time 20`, attaches `perf record -g` to the backend for SECONDS (default 8) once
# that direction's host iperf3 is moving data, then prints the test's row and
# `profile-shares`' split of the backend's CPU into what any backend moving the same bytes
# pays and its own part. As root (perf, and passt's network namespace); needs `perf`
# (Debian: linux-perf) and, for passt13-vu, scripts/debian13.sh's root.
# The perf data stays in target/perf/profile-BACKEND-DIRECTION.data.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH

BACKEND=${1:?usage: profile-bulk.sh vnu-ring|passt13-vu [host-to-guest|guest-to-host] [SECONDS]}
DIRECTION=${2:-host-to-guest}
SECONDS_RECORDED=${3:-8}
case "$BACKEND" in
  vnu-ring) PATTERN="${VNU_BIN:-release/vhost-net-user}" ;;
  passt13-vu) PATTERN='^passt .*--vhost-user' ;;
  *) echo "profile-bulk.sh: unknown backend '$BACKEND' (vnu-ring or passt13-vu)" >&2; exit 2 ;;
esac
case "$DIRECTION" in
  # The host's iperf3 writes host→guest and reads guest→host.
  host-to-guest) COUNTER=wchar; ROW='host→guest' ;;
  guest-to-host) COUNTER=rchar; ROW='guest→host' ;;
  *) echo "profile-bulk.sh: unknown direction '$DIRECTION'" >&2; exit 2 ;;
esac
command -v perf > /dev/null || { echo "profile-bulk.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }

cargo build --release -p vhost-net-user -p vnu-perf
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$TARGET/perf"
DATA=$TARGET/perf/profile-$BACKEND-$DIRECTION.data
REPORT=$(mktemp /tmp/vnu-profile.XXXXXX)
RECORDER=
# The recorder would otherwise wait minutes for a test that a failed run never starts.
trap 'rm -f "$REPORT"; [ -z "$RECORDER" ] || kill "$RECORDER" 2> /dev/null || true' EXIT

# Waits for the backend, then for the host iperf3 of the direction to move more than 50 MB
# in a second, and records the backend.
record() {
  local pid="" iperf bytes
  declare -A last=()
  for _ in $(seq 600); do
    pid=$(pgrep -f -- "$PATTERN" | head -1 || true)
    [ -n "$pid" ] && break
    sleep 0.5
  done
  [ -n "$pid" ] || { echo "profile-bulk.sh: the backend did not start" >&2; return 1; }
  for _ in $(seq 600); do
    for iperf in $(pgrep -x iperf3 || true); do
      bytes=$(awk -v c="$COUNTER:" '$1 == c {print $2}' "/proc/$iperf/io" 2>/dev/null || true)
      [ -n "$bytes" ] || continue
      if [ -n "${last[$iperf]:-}" ] && [ $((bytes - last[$iperf])) -gt 50000000 ]; then
        sleep 2
        perf record -g -o "$DATA" -p "$pid" -- sleep "$SECONDS_RECORDED" > /dev/null 2>&1
        return 0
      fi
      last[$iperf]=$bytes
    done
    sleep 1
  done
  echo "profile-bulk.sh: the $ROW test never started" >&2
  return 1
}

record &
RECORDER=$!
"$TARGET/release/compare-backends" --only "$BACKEND" --tests bulk --runs 1 --time 20 > "$REPORT"
wait "$RECORDER"
RECORDER=
LINE=$(grep -E "^$BACKEND +$ROW Mbit/s" "$REPORT" || true)
[ -n "$LINE" ] || { cat "$REPORT" >&2; echo "profile-bulk.sh: no $ROW row" >&2; exit 1; }
echo "$LINE"
# Columns: backend, test, unit, median, runs, backend s, s/GB, ...
SECONDS_PER_GB=$(awk '{print $7}' <<< "$LINE")
perf script -F ip,sym -i "$DATA" 2> /dev/null |
  "$TARGET/release/profile-shares" --seconds-per-gb "$SECONDS_PER_GB" ${VNU_PROFILE_AGAINST:+--against "$VNU_PROFILE_AGAINST"}
