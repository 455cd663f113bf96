#!/bin/bash
# need-packages.sh PACKAGE... : installs the Debian packages that are not installed yet
# (apt-get update first, once). Needs root only when something is missing.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "need-packages: missing Debian packages: ${missing[*]}; install them or run this as root" >&2
  exit 1
fi
echo "need-packages: installing ${missing[*]}" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
