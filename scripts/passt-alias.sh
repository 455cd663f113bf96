#!/bin/bash
# passt-alias.sh install [PREFIX]   : makes vhost-net-user the `passt` that libvirt, libguestfs
#                                     and QEMU's -netdev passt find through PATH
# passt-alias.sh uninstall [PREFIX] : undoes it
#
# PREFIX defaults to /usr/local: libvirtd's PATH has /usr/local/bin before /usr/bin, so
# PREFIX/bin/passt is found before Debian's /usr/bin/passt, which stays installed and untouched.
#
# install creates PREFIX/bin/passt, a symbolic link to vhost-net-user: to /usr/bin/vhost-net-user
# when the Debian package is installed (scripts/build-deb.sh), otherwise to a copy of a built
# binary that it installs as PREFIX/bin/vhost-net-user (VNU_BINARY, default
# target/release/vhost-net-user of this checkout; VNU_BINARY also takes precedence over the
# package's). Run under the name passt, the program takes passt's command line.
# uninstall removes PREFIX/bin/passt, and the copy install made, only when the link is ours.
# Neither touches a PREFIX/bin/passt that is not our link (exit status 1).
#
# AppArmor (Debian's libvirt enforces a profile on libvirtd): libvirtd may run programs from
# /usr/bin (rule `/usr/bin/* PUx`) and, by path, /usr/bin/passt, but nothing from /usr/local/bin.
# AppArmor judges the file the link resolves to, so the link to the package's
# /usr/bin/vhost-net-user is allowed (run without an AppArmor profile: the passt profiles name
# /usr/bin/passt only, and the backend confines itself), while a link to a copy in
# /usr/local/bin is refused where AppArmor is enforced. With AppArmor, install the package.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
# The package's program (VNU_PACKAGED: another path, for the tests).
PACKAGED=${VNU_PACKAGED:-/usr/bin/vhost-net-user}

usage() {
  echo "usage: $0 install|uninstall [PREFIX]   (PREFIX defaults to /usr/local)" >&2
  exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
ACTION=$1
PREFIX=${2:-/usr/local}
BIN_DIR=$PREFIX/bin
LINK=$BIN_DIR/passt
COPY=$BIN_DIR/vhost-net-user

# Ours: a symbolic link to a file called vhost-net-user.
is_ours() {
  [ -L "$1" ] && [ "$(basename "$(readlink "$1")")" = vhost-net-user ]
}

refuse_foreign() {
  if { [ -e "$LINK" ] || [ -L "$LINK" ]; } && ! is_ours "$LINK"; then
    echo "passt-alias: $LINK exists and is not a link to vhost-net-user; left alone" >&2
    exit 1
  fi
}

apparmor_note() {
  local target=$1
  if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] &&
    [ "$(dirname "$target")" != /usr/bin ]; then
    echo "passt-alias: note: AppArmor is enabled; libvirtd's profile lets it run programs from" \
      "/usr/bin only, so libvirt cannot run $target (install the Debian package instead:" \
      "scripts/build-deb.sh)" >&2
  fi
}

case $ACTION in
  install)
    refuse_foreign
    if [ -z "${VNU_BINARY:-}" ] && [ -x "$PACKAGED" ]; then
      TARGET=$PACKAGED
    else
      SOURCE=${VNU_BINARY:-$ROOT/target/release/vhost-net-user}
      if [ ! -x "$SOURCE" ]; then
        echo "passt-alias: no $PACKAGED and no built binary $SOURCE" \
          "(cargo build --release -p vhost-net-user, or scripts/build-deb.sh and dpkg -i)" >&2
        exit 1
      fi
      mkdir -p "$BIN_DIR"
      # Copied under a temporary name, then renamed: never written through a link.
      tmp=$(mktemp "$BIN_DIR/.vhost-net-user.XXXXXX")
      cp "$SOURCE" "$tmp"
      chmod 0755 "$tmp"
      mv -f -T "$tmp" "$COPY"
      TARGET=$(cd "$BIN_DIR" && pwd -P)/vhost-net-user
    fi
    mkdir -p "$BIN_DIR"
    OLD=$(readlink "$LINK" || true)
    tmp=$BIN_DIR/.passt.$$
    ln -s "$TARGET" "$tmp"
    mv -f -T "$tmp" "$LINK"
    echo "passt-alias: $LINK -> $TARGET"
    # A copy an earlier install made, now that the link goes to the package's program.
    if [ -n "$OLD" ] && [ "$OLD" != "$TARGET" ] && [ "$OLD" = "$(cd "$BIN_DIR" && pwd -P)/vhost-net-user" ]; then
      rm -f "$COPY"
      echo "passt-alias: removed $COPY (an earlier install's copy)"
    fi
    apparmor_note "$TARGET"
    ;;
  uninstall)
    if [ ! -e "$LINK" ] && [ ! -L "$LINK" ]; then
      echo "passt-alias: no $LINK; nothing to remove"
      exit 0
    fi
    refuse_foreign
    TARGET=$(readlink "$LINK")
    rm -f "$LINK"
    echo "passt-alias: removed $LINK"
    # The copy install made: the link pointed into PREFIX/bin.
    if [ "$(dirname "$TARGET")" = "$(cd "$BIN_DIR" && pwd -P)" ] && [ -f "$COPY" ]; then
      rm -f "$COPY"
      echo "passt-alias: removed $COPY"
    fi
    ;;
  *) usage ;;
esac
