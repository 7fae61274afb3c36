#!/bin/sh
# Install relaymesh; called by `make install` after `make release`:
#   sh scripts/install.sh PREFIX DESTDIR
# PREFIX (default /usr/local) holds the binary; DESTDIR (default empty)
# is a staging root for packaging. Without DESTDIR and as root it also
# creates the system user relaymesh and its data dir /var/lib/relaymesh.
# Safe to run again: an existing relaymesh.conf is never overwritten.
set -eu

PREFIX=${1:-/usr/local}
DESTDIR=${2:-}
cd "$(dirname "$0")/.."

BIN=build-release/relaymesh
if [ ! -x "$BIN" ]; then
    echo "install.sh: $BIN is missing; run \`make release\` first" >&2
    exit 1
fi

SBIN="$DESTDIR$PREFIX/sbin"
ETC="$DESTDIR/etc/relaymesh"
UNITDIR="$DESTDIR/lib/systemd/system"

install -d -m 0755 "$SBIN" "$ETC" "$UNITDIR"
install -m 0755 "$BIN" "$SBIN/relaymesh"
install -m 0644 etc/relaymesh.conf.sample "$ETC/relaymesh.conf.sample"
new_conf=0
if [ ! -e "$ETC/relaymesh.conf" ]; then
    install -m 0640 etc/relaymesh.conf.sample "$ETC/relaymesh.conf"
    new_conf=1
fi
# The unit names the binary: follow PREFIX.
sed "s|/usr/local/sbin/relaymesh|$PREFIX/sbin/relaymesh|g" \
    etc/relaymesh.service > "$UNITDIR/relaymesh.service.tmp"
chmod 0644 "$UNITDIR/relaymesh.service.tmp"
mv "$UNITDIR/relaymesh.service.tmp" "$UNITDIR/relaymesh.service"

echo "installed $SBIN/relaymesh"
echo "installed $ETC/relaymesh.conf.sample"
[ "$new_conf" = 1 ] && echo "installed $ETC/relaymesh.conf (from the sample)"
echo "installed $UNITDIR/relaymesh.service"

if [ -n "$DESTDIR" ] || [ "$(id -u)" != 0 ]; then
    echo "not creating the user relaymesh and /var/lib/relaymesh" \
         "(needs root and no DESTDIR)"
    exit 0
fi

if ! getent passwd relaymesh >/dev/null 2>&1; then
    useradd --system --user-group --home /var/lib/relaymesh \
        --shell /usr/sbin/nologin relaymesh
    echo "created system user relaymesh"
fi
install -d -m 0700 -o relaymesh -g relaymesh /var/lib/relaymesh
# The node rereads its config on SIGHUP after dropping to relaymesh.
chgrp relaymesh /etc/relaymesh/relaymesh.conf
chmod 0640 /etc/relaymesh/relaymesh.conf
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || true
fi
cat <<MSG

next steps:
  edit /etc/relaymesh/relaymesh.conf (hostname, listen, domains)
  $PREFIX/sbin/relaymesh serve -c /etc/relaymesh/relaymesh.conf --check
  systemctl enable --now relaymesh
  relaymesh -c /etc/relaymesh/relaymesh.conf status
MSG
