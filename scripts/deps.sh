#!/bin/sh
# Install the Debian packages relaymesh needs, idempotently.
#   scripts/deps.sh          build + run dependencies
#   scripts/deps.sh test     also what the test suite needs (with the
#                            Windows cross build and Wine for win32/)
#   scripts/deps.sh bench    also what bench/ needs (Postfix as the peer)
#   scripts/deps.sh win      only what scripts/win-deps.sh needs (mingw-w64
#                            cross compilers, autotools, cmake, dpkg-source)
# Packages already installed are not touched. As a normal user it prints
# the apt-get line to run as root instead of running it.
set -eu

BUILD="build-essential cmake pkg-config libuv1-dev liblmdb-dev libsodium-dev libmsgpack-dev libinih-dev libssl-dev libunbound-dev"
TEST="libcmocka-dev libjansson-dev python3 python3-pytest swaks libnet-ssleay-perl clang lmdb-utils openssl testssl.sh unbound python3-aiosmtpd python3-msgpack postfix nftables serf"
BENCH="postfix sasl2-bin libsasl2-modules"
# msgpack-c's CMake project enables C++ as well, hence the g++ cross compilers.
WIN="gcc-mingw-w64-x86-64 gcc-mingw-w64-i686 g++-mingw-w64-x86-64 g++-mingw-w64-i686 binutils-mingw-w64-x86-64 binutils-mingw-w64-i686 make cmake autoconf automake libtool dpkg-dev xz-utils debian-archive-keyring"

# Wine runs the MAPI DLL's tests (headless wine64; libwine-dev has mapi.h).
WINE="wine wine64 libwine-dev"

want="$BUILD"
case "${1:-}" in
test) want="$want $TEST $WIN $WINE" ;;
bench) want="$want $TEST $BENCH" ;;
win) want="$WIN" ;;
"") ;;
*) echo "usage: scripts/deps.sh [test|bench|win]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "relaymesh needs these Debian packages:$missing" >&2
    echo "run as root:  apt-get update && apt-get install -y$missing" >&2
    exit 1
fi

echo "installing:$missing"
# Postfix asks debconf questions; answer "No configuration" so that it
# installs without configuring or starting a system mail service.
case "$missing" in
*postfix*)
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ;;
esac
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || apt-get update
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
