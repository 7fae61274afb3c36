#!/bin/bash
# Check what scripts/win-deps.sh built:
#
#   scripts/win-deps-check.sh [DIR]
#
# DIR defaults to $RELAYMESH_WIN_DEPS_DIR, else build/win-deps. For x64 and x86:
#   1. libsodium.a, libmsgpackc.a and their headers are present;
#   2. every member of both archives is a PE/COFF object of that
#      architecture (pe-x86-64 / pe-i386, per the mingw objdump);
#   3. a small C program (sodium_init, crypto_box_keypair, a sealed-box
#      round trip, a msgpack sbuffer/packer/unpacker round trip) is
#      cross-compiled and linked statically against both libraries, and the
#      .exe imports no libsodium, msgpack, libgcc or winpthread DLL;
#   4. x64: the program runs under wine64 (headless, WINEDEBUG=-all, a fresh
#      WINEPREFIX under /tmp, removed afterwards) and must print "OK".
#      x86 runs too when a 32-bit wine (wine32:i386) is installed.
# A missing wine skips step 4 with a message; anything else failing makes
# the exit status non-zero.
set -Eeuo pipefail

ME="relaymesh: win-deps-check"
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
DIR=${1:-${RELAYMESH_WIN_DEPS_DIR:-$ROOT/build/win-deps}}
[ -d "$DIR" ] || { echo "$ME: $DIR does not exist; run scripts/win-deps.sh first" >&2; exit 1; }
DIR=$(cd "$DIR" && pwd -P)

FAILS=0
fail() { echo "FAIL  $1" >&2; echo "$ME: $1; $2" >&2; FAILS=$((FAILS + 1)); }
ok() { echo "ok    $*"; }

TMP=$(mktemp -d /tmp/relaymesh-win-deps-check.XXXXXX)
WINEPFX=""
cleanup() {
    if [ -n "$WINEPFX" ] && [ -d "$WINEPFX" ]; then
        WINEPREFIX="$WINEPFX" "$WINESERVER" -k >/dev/null 2>&1 || true
        rm -rf "$WINEPFX"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/check.c" <<'EOF'
/* Links libsodium and msgpack-c statically and exercises both. */
#define SODIUM_STATIC 1
#include <sodium.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#define CHECK(c)                                                   \
    do {                                                           \
        if (!(c)) {                                                \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);    \
            return 1;                                              \
        }                                                          \
    } while (0)

int main(void)
{
    unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
    unsigned char pk2[crypto_scalarmult_BYTES];
    static const unsigned char msg[] = "relaymesh";
    unsigned char sealed[crypto_box_SEALBYTES + sizeof msg], opened[sizeof msg];
    msgpack_sbuffer sbuf;
    msgpack_packer pck;
    msgpack_unpacked up;
    msgpack_object_kv *kv;
    size_t off = 0;

    CHECK(sodium_init() >= 0);
    CHECK(crypto_box_keypair(pk, sk) == 0);
    CHECK(crypto_scalarmult_base(pk2, sk) == 0);
    CHECK(memcmp(pk, pk2, sizeof pk) == 0);
    CHECK(crypto_box_seal(sealed, msg, sizeof msg, pk) == 0);
    CHECK(crypto_box_seal_open(opened, sealed, sizeof sealed, pk, sk) == 0);
    CHECK(memcmp(opened, msg, sizeof msg) == 0);
    sealed[0] ^= 1;
    CHECK(crypto_box_seal_open(opened, sealed, sizeof sealed, pk, sk) != 0);

    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pck, &sbuf, msgpack_sbuffer_write);
    CHECK(msgpack_pack_map(&pck, 2) == 0);
    CHECK(msgpack_pack_str_with_body(&pck, "key", 3) == 0);
    CHECK(msgpack_pack_bin_with_body(&pck, pk, sizeof pk) == 0);
    CHECK(msgpack_pack_str_with_body(&pck, "port", 4) == 0);
    CHECK(msgpack_pack_uint32(&pck, 4751) == 0);

    msgpack_unpacked_init(&up);
    CHECK(msgpack_unpack_next(&up, sbuf.data, sbuf.size, &off) == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == sbuf.size);
    CHECK(up.data.type == MSGPACK_OBJECT_MAP && up.data.via.map.size == 2);
    kv = up.data.via.map.ptr;
    CHECK(kv[0].key.type == MSGPACK_OBJECT_STR && kv[0].key.via.str.size == 3 &&
          memcmp(kv[0].key.via.str.ptr, "key", 3) == 0);
    CHECK(kv[0].val.type == MSGPACK_OBJECT_BIN && kv[0].val.via.bin.size == sizeof pk &&
          memcmp(kv[0].val.via.bin.ptr, pk, sizeof pk) == 0);
    CHECK(kv[1].val.type == MSGPACK_OBJECT_POSITIVE_INTEGER && kv[1].val.via.u64 == 4751);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sbuf);

    printf("OK libsodium %s, msgpack-c %s, %d-bit\n", sodium_version_string(), msgpack_version(),
           (int)(8 * sizeof(void *)));
    return 0;
}
EOF

# wine: 64-bit loader, 32-bit loader, wineserver.
WINE64=$(command -v wine64 2>/dev/null || true)
[ -z "$WINE64" ] && [ -x /usr/lib/wine/wine64 ] && WINE64=/usr/lib/wine/wine64
WINE32=""
[ -x /usr/lib/wine/wine ] && WINE32=/usr/lib/wine/wine
WINESERVER=$(command -v wineserver 2>/dev/null || echo /usr/lib/wine/wineserver)

run_wine() { # loader exe
    local out rc=0
    if [ -z "$WINEPFX" ]; then
        WINEPFX=$(mktemp -d /tmp/relaymesh-wine.XXXXXX)
        echo "      (creating a fresh WINEPREFIX $WINEPFX, takes a few seconds)"
    fi
    out=$(cd "$TMP" && WINEPREFIX="$WINEPFX" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" \
        DISPLAY="" timeout 300 "$1" "$2" 2>"$TMP/wine.err") || rc=$?
    out=$(printf '%s' "$out" | tr -d '\r')
    if [ "$rc" = 0 ] && printf '%s\n' "$out" | grep -q '^OK'; then
        ok "runs under $(basename "$1"): $out"
    else
        fail "$(basename "$2") under $(basename "$1") exited $rc and printed: ${out:-nothing} $(head -c 400 "$TMP/wine.err")" \
            "the libraries link but do not work; rebuild them (delete $DIR/stamps and run scripts/win-deps.sh)"
    fi
}

for arch in x64 x86; do
    case "$arch" in
    x64) triple=x86_64-w64-mingw32 fmt=pe-x86-64 mach=i386:x86-64 exefmt=pei-x86-64 ;;
    x86) triple=i686-w64-mingw32 fmt=pe-i386 mach=i386 exefmt=pei-i386 ;;
    esac
    echo "== $arch ($triple) in $DIR/$arch"
    for t in "$triple-gcc" "$triple-objdump"; do
        command -v "$t" >/dev/null 2>&1 ||
            { fail "$t not found" "install the mingw-w64 cross tools: sh scripts/deps.sh win"; continue 2; }
    done

    # 1. files
    missing=0
    for f in lib/libsodium.a lib/libmsgpackc.a include/sodium.h include/msgpack.h; do
        if [ -f "$DIR/$arch/$f" ]; then
            ok "$f ($(stat -c %s "$DIR/$arch/$f") bytes)"
        else
            fail "$DIR/$arch/$f is missing" "run scripts/win-deps.sh"
            missing=1
        fi
    done
    [ "$missing" = 0 ] || continue

    # 2. every archive member is a PE/COFF object for this architecture
    for lib in libsodium.a libmsgpackc.a; do
        "$triple-objdump" -f "$DIR/$arch/lib/$lib" >"$TMP/objdump.txt" 2>&1 || {
            fail "$triple-objdump cannot read $lib: $(head -n 3 "$TMP/objdump.txt")" "rebuild it with scripts/win-deps.sh"
            continue
        }
        members=$(grep -c 'file format' "$TMP/objdump.txt" || true)
        good=$(grep -c "file format $fmt\$" "$TMP/objdump.txt" || true)
        goodarch=$(grep -c "^architecture: $mach," "$TMP/objdump.txt" || true)
        if [ "$members" -gt 0 ] && [ "$good" = "$members" ] && [ "$goodarch" = "$members" ]; then
            ok "$lib: $members objects, all '$fmt', architecture $mach"
        else
            fail "$lib: of $members objects $good are '$fmt' and $goodarch are architecture $mach" \
                "it was not built for $triple; delete $DIR/stamps and run scripts/win-deps.sh"
        fi
    done

    # 3. a static link
    exe="$TMP/check-$arch.exe"
    if ! "$triple-gcc" -std=c99 -O2 -Wall -Wextra -Werror -static -I"$DIR/$arch/include" \
        "$TMP/check.c" -L"$DIR/$arch/lib" -lmsgpackc -lsodium -o "$exe" >"$TMP/link.txt" 2>&1; then
        fail "the check program does not compile or link for $arch: $(head -c 1500 "$TMP/link.txt")" \
            "rebuild the libraries (delete $DIR/stamps and run scripts/win-deps.sh)"
        continue
    fi
    if "$triple-objdump" -f "$exe" | grep -q "file format $exefmt\$"; then
        ok "check-$arch.exe links statically ($exefmt, $(stat -c %s "$exe") bytes)"
    else
        fail "check-$arch.exe is not $exefmt" "check the $triple toolchain"
    fi
    dlls=$("$triple-objdump" -p "$exe" | awk '/DLL Name:/ {print $3}' | sort -u | tr '\n' ' ')
    dlls=${dlls% }
    if printf '%s' "$dlls" | grep -qiE 'sodium|msgpack|libgcc|winpthread|libstdc'; then
        fail "check-$arch.exe imports non-system DLLs: $dlls" "the link was not fully static"
    else
        ok "imports only system DLLs: $dlls"
    fi

    # 4. run under wine
    if [ "$arch" = x64 ]; then
        if [ -n "$WINE64" ]; then
            run_wine "$WINE64" "$exe"
        else
            echo "skip  run under wine64: wine64 is not installed (apt-get install --no-install-recommends wine wine64)"
        fi
    else
        if [ -n "$WINE32" ]; then
            run_wine "$WINE32" "$exe"
        else
            echo "skip  run of the x86 program: no 32-bit wine (wine32:i386, needs 'dpkg --add-architecture i386'); only x64 is run"
        fi
    fi
done

if [ "$FAILS" -gt 0 ]; then
    echo "$ME: $FAILS check(s) failed; see the FAIL lines above" >&2
    exit 1
fi
echo "win-deps-check: all checks passed"
