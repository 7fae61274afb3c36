#!/bin/bash
# Cross-build win32/ (relaymesh-mapi.dll and the win32/tests programs) for
# Windows x64 and x86 with mingw-w64.
#
#   scripts/win-build.sh [OUTDIR]
#
#   OUTDIR    default build/win32 in the source tree; x64 goes to
#             OUTDIR/x64, x86 to OUTDIR/x86 (relaymesh-mapi.dll at the top,
#             test programs in tests/)
#
# Environment: RELAYMESH_WIN_DEPS_DIR (default build/win-deps): the static
# libsodium and msgpack-c; scripts/win-deps.sh builds them there first
# when they are missing. JOBS: parallel compile jobs (default nproc).
#
# Idempotent (re-running rebuilds only what changed) and quiet on success:
# one summary line. Each step's output goes to OUTDIR/ARCH/*.log; on a
# failure the end of the log is shown. Last, the exports of both DLLs are
# checked: with win32/relaymesh-mapi.def present every exported name must
# be undecorated (no stdcall @N, the x86 trap).
set -Eeuo pipefail

ME="relaymesh: win-build"
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)

die() {
    # die "what happened" "what to do"
    echo "$ME: $1; $2" >&2
    exit 1
}

[ $# -le 1 ] || die "too many arguments" "usage: scripts/win-build.sh [OUTDIR]"
case "${1:-}" in
-h | --help)
    sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
-*) die "unknown option $1" "usage: scripts/win-build.sh [OUTDIR]" ;;
esac

OUT=${1:-$ROOT/build/win32}
DEPS=${RELAYMESH_WIN_DEPS_DIR:-$ROOT/build/win-deps}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
case "$JOBS" in '' | *[!0-9]* | 0) die "JOBS must be a positive number, not '$JOBS'" "e.g. JOBS=2" ;; esac

# ---- tools ------------------------------------------------------------------
missing=""
for t in cmake make x86_64-w64-mingw32-gcc i686-w64-mingw32-gcc \
    x86_64-w64-mingw32-objdump; do
    command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
done
[ -z "$missing" ] ||
    die "missing build tools:$missing" \
        "install them with 'sh scripts/deps.sh win' as root (Debian: apt-get install gcc-mingw-w64-x86-64 gcc-mingw-w64-i686 binutils-mingw-w64-x86-64 binutils-mingw-w64-i686 cmake make)"
if [ -e "$ROOT/win32/mapi.c" ] && [ ! -f /usr/include/wine/wine/windows/mapi.h ] &&
    [ ! -f /usr/include/wine/windows/mapi.h ]; then
    die "Wine's mapi.h is missing (the MAPI layer builds against it)" \
        "install it as root: apt-get install --no-install-recommends libwine-dev"
fi

# ---- dependencies -----------------------------------------------------------
deps_ok() {
    local a f
    for a in x64 x86; do
        for f in include/sodium.h include/msgpack.h lib/libsodium.a lib/libmsgpackc.a; do
            [ -f "$DEPS/$a/$f" ] || return 1
        done
    done
}
if ! deps_ok; then
    mkdir -p "$OUT"
    echo "win-build: libsodium / msgpack-c for Windows are missing in $DEPS: building them (scripts/win-deps.sh, a few minutes)"
    "$ROOT/scripts/win-deps.sh" "$DEPS" >"$OUT/win-deps.log" 2>&1 || {
        tail -n 30 "$OUT/win-deps.log" >&2
        die "scripts/win-deps.sh failed (log: $OUT/win-deps.log)" "read its message above, fix the cause and run this again"
    }
    deps_ok || die "scripts/win-deps.sh finished but $DEPS still lacks the libraries" "see $OUT/win-deps.log"
fi
DEPS=$(cd "$DEPS" && pwd -P)

# ---- build ------------------------------------------------------------------
step() { # log what cmd...
    local log=$1 what=$2
    shift 2
    if ! "$@" >"$log" 2>&1; then
        echo "---- last lines of $log ----" >&2
        tail -n 40 "$log" >&2
        die "$what failed (log: $log)" "fix the error shown above and run this again"
    fi
}

for arch in x64 x86; do
    b="$OUT/$arch"
    mkdir -p "$b"
    step "$b/configure.log" "cmake configure for $arch" \
        cmake -S "$ROOT/win32" -B "$b" -G "Unix Makefiles" \
        -DCMAKE_TOOLCHAIN_FILE="$ROOT/win32/cmake/mingw-$arch.cmake" \
        -DRM_WIN_DEPS="$DEPS/$arch"
    step "$b/build.log" "build for $arch" cmake --build "$b" -j "$JOBS"
    [ -f "$b/relaymesh-mapi.dll" ] ||
        die "the $arch build left no $b/relaymesh-mapi.dll" "see $b/build.log"
done

# ---- exports ----------------------------------------------------------------
# Names in the export table: the lines after "[Ordinal/Name Pointer] Table".
exports_of() {
    x86_64-w64-mingw32-objdump -p "$1" |
        awk '/\[Ordinal\/Name Pointer\] Table/ { t = 1; next }
             t && /^[ \t]*\[ *[0-9]+\]/ { print $NF; next }
             t { t = 0 }'
}
# Names the .def exports: the first word of each line after EXPORTS,
# without "@ordinal" or "=internal".
def_names() {
    tr -d '\r' <"$1" | awk 'toupper($1) == "EXPORTS" { e = 1; next }
        e && NF && $1 !~ /^;/ { n = $1; sub(/[=@].*/, "", n); print n }'
}
if [ -f "$ROOT/win32/relaymesh-mapi.def" ]; then
    for arch in x64 x86; do
        dll="$OUT/$arch/relaymesh-mapi.dll"
        names=$(exports_of "$dll")
        [ -n "$names" ] || die "$dll exports nothing" "check win32/relaymesh-mapi.def and $OUT/$arch/build.log"
        bad=$(printf '%s\n' "$names" | grep -F '@' || true)
        [ -z "$bad" ] ||
            die "$dll exports decorated names: $(echo $bad)" \
                "list the undecorated names in win32/relaymesh-mapi.def (x86 links with -Wl,--kill-at)"
        for n in $(def_names "$ROOT/win32/relaymesh-mapi.def"); do
            printf '%s\n' "$names" | grep -qxF "$n" ||
                die "$dll does not export $n, which win32/relaymesh-mapi.def lists" "see $OUT/$arch/build.log"
        done
    done
fi

# The DLL runs inside other programs: no mingw runtime DLLs beside it.
for arch in x64 x86; do
    dll="$OUT/$arch/relaymesh-mapi.dll"
    deps=$(x86_64-w64-mingw32-objdump -p "$dll" | awk '/DLL Name:/ { print $3 }' | tr '\n' ' ')
    if printf '%s' "$deps" | grep -qiE 'libgcc|winpthread|libsodium|msgpack|libstdc'; then
        die "$dll imports non-system DLLs: $deps" "link them statically (win32/CMakeLists.txt)"
    fi
done

echo "win-build: ok: $OUT/x64/relaymesh-mapi.dll, $OUT/x86/relaymesh-mapi.dll ($(exports_of "$OUT/x86/relaymesh-mapi.dll" | wc -l) exports), tests in $OUT/{x64,x86}/tests"
