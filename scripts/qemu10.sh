#!/bin/bash
# qemu10.sh ARG... : Debian 13's qemu-system-x86_64 (QEMU 10) with ARG..., run from the root that
# debian13.sh keeps, seeing the test guest's files (VNU_GUEST_CACHE), this repository (the tests
# keep slirp's tftp= and smb= directories under target/) and /tmp at their host paths. For the end-to-end tests: `VNU_QEMU=scripts/qemu10.sh scripts/test.sh`. The process
# becomes QEMU itself (each step execs), so signals to its pid reach QEMU.
set -euo pipefail
scripts=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
repo=$(dirname "$scripts")
guest=${VNU_GUEST_CACHE:-/var/tmp/vnu-guest}
export VNU_DEBIAN13_SHARE="$guest:$repo${VNU_DEBIAN13_SHARE:+:$VNU_DEBIAN13_SHARE}"
exec "$scripts/debian13.sh" qemu-system-x86_64 "$@"
