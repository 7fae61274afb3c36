#!/bin/bash
# Cross-build libsodium and msgpack-c (the C library) for Windows, x64 and
# x86, from Debian's own source packages, as static libraries only, so that
# win32/relaymesh-mapi.dll can link them statically.
#
#   scripts/win-deps.sh [--update] [--jobs N] [DIR]
#
#   DIR       where everything goes; default $RELAYMESH_WIN_DEPS_DIR, else
#             build/win-deps in the source tree
#   --update  refresh the private Debian source index first and rebuild
#             whatever has a newer source version (without it the index
#             fetched by the first run is reused, so builds are repeatable)
#   --jobs N  parallel compile jobs (default $JOBS, else nproc)
#
# Environment: RELAYMESH_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# RELAYMESH_DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security),
# RELAYMESH_DEBIAN_SUITE (bookworm), RELAYMESH_APT_CHECK_VALID_UNTIL (true).
#
# Result:
#   DIR/x64/{include,lib}  x86_64-w64-mingw32: libsodium.a, libmsgpackc.a
#   DIR/x86/{include,lib}  i686-w64-mingw32:   the same
#   DIR/toolchain-x64.cmake, DIR/toolchain-x86.cmake  CMake cross toolchains
# Code that includes <sodium.h> for these libraries should define
# SODIUM_STATIC (libsodium's rule for static linking on Windows).
#
# Sources come through a PRIVATE apt directory (DIR/apt: its own
# sources.list, lists, cache and dpkg status file); the system's /etc/apt
# and /var/lib/apt are only read for apt's general configuration, never
# written. What is fetched is checked three times over:
#   1. apt-get update: the Release file must carry a valid signature from
#      Debian's archive keyring (signed-by, insecure repositories refused);
#      the Sources index is checked against it;
#   2. apt-get source: each file (.dsc, tarballs) must match the size and
#      SHA256 that the signed Sources index lists (apt refuses otherwise);
#      this script then checks them again itself with sha256sum;
#   3. dpkg-source -x --require-strong-checksums: the tarballs must match
#      the SHA256 sums inside the .dsc. (The .dsc's own OpenPGP signature is
#      checked too when the debian-keyring package is installed; without
#      it dpkg-source warns in the log, and step 1-2 still bind the .dsc to
#      the archive signature.)
#
# Idempotent: a stamp per package and architecture records the source
# version and build recipe; when every stamp matches and the installed
# files are present the script does nothing and exits 0 (no network).
#
# Build tools come from Debian (scripts/deps.sh win): installed when run as
# root, otherwise the apt-get line to run is printed.
set -Eeuo pipefail

ME="relaymesh: win-deps"
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)

SUITE=${RELAYMESH_DEBIAN_SUITE:-bookworm}
MIRROR=${RELAYMESH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${RELAYMESH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

PACKAGES="libsodium msgpack-c"
ARCHES="x64 x86"
# Change a recipe (or RECIPE_REV) and the next run rebuilds that package.
RECIPE_REV=1
RECIPE_libsodium="rev$RECIPE_REV autoreconf -fi; configure --host=TRIPLE --disable-shared --enable-static; make; make install; rm *.la"
RECIPE_msgpack_c="rev$RECIPE_REV cmake toolchain-ARCH.cmake Release BUILD_SHARED_LIBS=OFF MSGPACK_ENABLE_SHARED=OFF MSGPACK_BUILD_TESTS=OFF MSGPACK_BUILD_EXAMPLES=OFF; build; install"

die() {
    # die "what happened" "what to do"
    echo "$ME: $1; $2" >&2
    DIED=1
    exit 1
}

on_err() {
    local rc=$? line=$1
    [ -n "${DIED:-}" ] && return
    DIED=1
    echo "$ME: unexpected failure (exit $rc) at scripts/win-deps.sh line $line; read the messages above, fix the cause and run it again" >&2
    exit "$rc"
}
trap 'on_err $LINENO' ERR

say() { echo "win-deps: $*"; }

triple_of() {
    case "$1" in
    x64) echo x86_64-w64-mingw32 ;;
    x86) echo i686-w64-mingw32 ;;
    esac
}

recipe_of() {
    case "$1" in
    libsodium) echo "$RECIPE_libsodium" ;;
    msgpack-c) echo "$RECIPE_msgpack_c" ;;
    esac
}

# ---- arguments --------------------------------------------------------------
UPDATE=0
DIR_ARG=""
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
while [ $# -gt 0 ]; do
    case "$1" in
    --update) UPDATE=1 ;;
    --jobs) [ $# -ge 2 ] || die "--jobs needs a number" "e.g. --jobs 2"; JOBS=$2; shift ;;
    --jobs=*) JOBS=${1#--jobs=} ;;
    -h|--help) sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" "usage: scripts/win-deps.sh [--update] [--jobs N] [DIR]" ;;
    *) [ -z "$DIR_ARG" ] || die "more than one folder given ($DIR_ARG, $1)" "give at most one DIR"; DIR_ARG=$1 ;;
    esac
    shift
done
case "$JOBS" in ''|*[!0-9]*|0) die "--jobs/JOBS must be a positive number, not '$JOBS'" "e.g. --jobs 2" ;; esac

DIR=${DIR_ARG:-${RELAYMESH_WIN_DEPS_DIR:-$ROOT/build/win-deps}}
mkdir -p "$DIR" 2>/dev/null || die "cannot create the folder $DIR" "check its parent's permissions or give another DIR"
DIR=$(cd "$DIR" && pwd -P)
case "$DIR" in
*[[:space:]]*) die "the folder '$DIR' contains white space, which autotools builds cannot handle" "give a DIR without spaces" ;;
esac

APT="$DIR/apt"
DL="$DIR/downloads"
SRC="$DIR/src"
WORK="$DIR/work"
LOGS="$DIR/logs"
STAMPS="$DIR/stamps"
VERSIONS="$DIR/versions"

# One run at a time per folder.
exec 9>"$DIR/.lock"
if ! flock -n 9; then
    say "another win-deps run holds $DIR/.lock; waiting for it"
    flock 9
fi

stamp_text() { # pkg version arch
    printf 'package=%s\nversion=%s\narch=%s\nhost=%s\nrecipe=%s\n' \
        "$1" "$2" "$3" "$(triple_of "$3")" "$(recipe_of "$1")"
}

# True when pkg/arch is installed from this version with this recipe and
# every file it installed is still there.
is_current() { # pkg version arch
    local stamp="$STAMPS/$1-$3.stamp" manifest="$STAMPS/$1-$3.files" f
    [ -f "$stamp" ] && [ -f "$manifest" ] || return 1
    [ "$(cat "$stamp")" = "$(stamp_text "$1" "$2" "$3")" ] || return 1
    while IFS= read -r f; do
        [ -e "$DIR/$3/$f" ] || return 1
    done <"$manifest"
    return 0
}

version_from_file() { # pkg -> version recorded by the last resolution
    [ -f "$VERSIONS" ] || return 1
    awk -v p="$1" '$1 == p { print $2; found = 1 } END { exit !found }' "$VERSIONS"
}

# ---- fast path: everything in place -----------------------------------------
if [ "$UPDATE" = 0 ]; then
    all=1
    summary=""
    for pkg in $PACKAGES; do
        ver=$(version_from_file "$pkg") || { all=0; break; }
        summary="$summary $pkg $ver,"
        for arch in $ARCHES; do
            is_current "$pkg" "$ver" "$arch" || { all=0; break 2; }
        done
    done
    if [ "$all" = 1 ]; then
        say "up to date:${summary%,} for $ARCHES in $DIR"
        exit 0
    fi
fi

# ---- build tools ------------------------------------------------------------
need_tools() {
    local t
    for t in apt-get apt-cache dpkg-source sha256sum flock make cmake autoreconf libtoolize xz \
        x86_64-w64-mingw32-gcc x86_64-w64-mingw32-g++ x86_64-w64-mingw32-ar \
        i686-w64-mingw32-gcc i686-w64-mingw32-g++ i686-w64-mingw32-ar; do
        command -v "$t" >/dev/null 2>&1 || return 0
    done
    [ -r "$KEYRING" ] || return 0
    return 1
}
if need_tools; then
    say "installing the build tools (scripts/deps.sh win)"
    sh "$ROOT/scripts/deps.sh" win ||
        die "the Windows build tools are missing and could not be installed" \
            "run 'sh scripts/deps.sh win' as root (or install the packages it names) and run this again"
    need_tools && die "build tools still missing after scripts/deps.sh win (one of: mingw-w64 gcc/g++, cmake, autoconf/automake/libtool, dpkg-dev, xz, $KEYRING)" \
        "check that the packages listed in scripts/deps.sh (WIN) are installed"
fi

# ---- private apt directory --------------------------------------------------
mkdir -p "$APT/etc/sources.list.d" "$APT/etc/preferences.d" "$APT/lists/partial" \
    "$APT/cache/archives/partial" "$APT/state" "$DL" "$SRC" "$WORK" "$LOGS" "$STAMPS"
[ -f "$APT/state/status" ] || : >"$APT/state/status"

sources="# Written by scripts/win-deps.sh: Debian $SUITE sources for the Windows builds.
# Private to this folder; the system's /etc/apt is not touched.
deb-src [signed-by=$KEYRING] $MIRROR $SUITE main
deb-src [signed-by=$KEYRING] $MIRROR $SUITE-updates main
deb-src [signed-by=$KEYRING] $SECURITY_MIRROR $SUITE-security main"
if [ ! -f "$APT/etc/sources.list" ] || [ "$(cat "$APT/etc/sources.list")" != "$sources" ]; then
    printf '%s\n' "$sources" >"$APT/etc/sources.list"
    rm -f "$VERSIONS"
    UPDATE=1
fi

# apt as root downloads as the unprivileged _apt user: let it write here.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
    chown _apt "$DL" "$APT/lists/partial" "$APT/cache/archives/partial" 2>/dev/null || true
fi

APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT/etc/sources.list"
    -o "Dir::Etc::SourceParts=$APT/etc/sources.list.d"
    -o "Dir::Etc::Preferences=$APT/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$APT/etc/preferences.d"
    -o "Dir::State=$APT/state"
    -o "Dir::State::Lists=$APT/lists"
    -o "Dir::State::status=$APT/state/status"
    -o "Dir::Cache=$APT/cache"
    # Verification stays on whatever the system's apt.conf says (this
    # machine's sets Check-Valid-Until false, which would accept a replayed,
    # expired Release file; RELAYMESH_APT_CHECK_VALID_UNTIL=false for
    # snapshot.debian.org mirrors).
    -o "Acquire::Check-Valid-Until=${RELAYMESH_APT_CHECK_VALID_UNTIL:-true}"
    -o "Acquire::AllowInsecureRepositories=false"
    -o "Acquire::AllowDowngradeToInsecureRepositories=false"
    -o "Acquire::AllowWeakRepositories=false"
    -o "APT::Get::AllowUnauthenticated=false"
)
papt() { apt-get "${APT_OPTS[@]}" "$@"; }

if [ "$UPDATE" = 1 ] || ! ls "$APT/lists/"*_Sources* >/dev/null 2>&1; then
    say "fetching the Debian $SUITE source index into $APT"
    if ! papt -q --error-on=any update >"$LOGS/apt-update.log" 2>&1; then
        cat "$LOGS/apt-update.log" >&2
        die "apt-get update of the private source index failed (network, mirror $MIRROR, or a signature that does not verify against $KEYRING)" \
            "read the apt messages above; check network access to $MIRROR, or set RELAYMESH_DEBIAN_MIRROR to a reachable Debian mirror"
    fi
    for s in "$SUITE" "$SUITE-updates" "$SUITE-security"; do
        ls "$APT/lists/"*"_dists_${s}_InRelease" >/dev/null 2>&1 ||
            die "no signed InRelease file for $s after apt-get update" "check the mirror; see $LOGS/apt-update.log"
    done
fi

# ---- resolve versions -------------------------------------------------------
declare -A VER FILES
for pkg in $PACKAGES; do
    uris=$(papt -q source --print-uris "$pkg" 2>"$LOGS/resolve-$pkg.log" | grep "^'") ||
        die "Debian $SUITE has no source package '$pkg' in the private index (see $LOGS/resolve-$pkg.log)" \
            "run 'scripts/win-deps.sh --update' to refresh the index"
    dsc=$(printf '%s\n' "$uris" | awk '{print $2}' | grep '\.dsc$' | head -n1) ||
        die "apt lists no .dsc for $pkg" "run 'scripts/win-deps.sh --update'"
    ver=${dsc#"${pkg}_"}
    VER[$pkg]=${ver%.dsc}
    # name size hash-type:hash, one file a line
    FILES[$pkg]=$(printf '%s\n' "$uris" | awk '{print $2, $3, $4}')
done

# ---- fetch and verify -------------------------------------------------------
fetch() { # pkg
    local pkg=$1 ver=${VER[$1]} name size hash got
    (cd "$DL" && papt -q source --download-only "$pkg=$ver") >"$LOGS/fetch-$pkg.log" 2>&1 || {
        tail -n 20 "$LOGS/fetch-$pkg.log" >&2
        die "apt-get source could not fetch or verify $pkg $ver" \
            "see $LOGS/fetch-$pkg.log; check network access to $MIRROR and run this again"
    }
    while read -r name size hash; do
        case "$hash" in
        SHA256:*|SHA512:*) ;;
        *) die "the index lists no SHA256/SHA512 sum for $name (only '$hash')" "use a Debian mirror with current indexes" ;;
        esac
        [ -f "$DL/$name" ] || die "$name is missing after apt-get source" "see $LOGS/fetch-$pkg.log"
        [ "$(stat -c %s "$DL/$name")" = "$size" ] ||
            die "$name has the wrong size (index: $size bytes)" "delete $DL/$name and run this again"
        case "$hash" in
        SHA256:*) got=$(sha256sum "$DL/$name" | awk '{print $1}') ;;
        SHA512:*) got=$(sha512sum "$DL/$name" | awk '{print $1}') ;;
        esac
        [ "$got" = "${hash#*:}" ] ||
            die "$name does not match the ${hash%%:*} sum in Debian's signed index" "delete $DL/$name and run this again"
    done <<<"${FILES[$pkg]}"
}

# Unpack (dpkg-source applies Debian's patches) and prepare a pristine
# source tree shared by both architectures' out-of-tree builds.
prepare() { # pkg
    local pkg=$1 ver=${VER[$1]} dsc tree log
    dsc="$DL/${pkg}_$ver.dsc"
    tree="$SRC/${pkg}_$ver"
    log="$LOGS/unpack-$pkg.log"
    [ -f "$tree/.relaymesh-prepared" ] && return 0
    rm -rf "$tree"
    dpkg-source --require-strong-checksums -x "$dsc" "$tree" >"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        die "dpkg-source could not verify or unpack $dsc" "see $log; delete $DL/${pkg}_* and run this again"
    }
    if [ "$pkg" = libsodium ]; then
        # Debian's orig tarball is a git export without configure. Not
        # autogen.sh: it would download config.guess/config.sub with curl.
        (cd "$tree" && autoreconf -fi) >>"$log" 2>&1 || {
            tail -n 20 "$log" >&2
            die "autoreconf failed in $tree" "see $log; check that autoconf, automake and libtool are installed (scripts/deps.sh win)"
        }
    fi
    touch "$tree/.relaymesh-prepared"
}

write_toolchain() { # arch
    local arch=$1 triple cpu f
    triple=$(triple_of "$arch")
    cpu=${triple%%-*}
    f="$DIR/toolchain-$arch.cmake"
    cat >"$f.tmp" <<EOF
# Written by scripts/win-deps.sh: cross-compile for Windows $arch with mingw-w64.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR $cpu)
set(CMAKE_C_COMPILER $triple-gcc)
set(CMAKE_CXX_COMPILER $triple-g++)
set(CMAKE_RC_COMPILER $triple-windres)
set(CMAKE_FIND_ROOT_PATH /usr/$triple $DIR/$arch)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
EOF
    mv "$f.tmp" "$f"
}

in_dir() { # dir cmd...: run cmd in dir
    local d=$1
    shift
    (cd "$d" && "$@")
}

# Run one build step; on failure show the log's end and stop.
step() { # pkg arch what log cmd...
    local pkg=$1 arch=$2 what=$3 log=$4
    shift 4
    if ! "$@" >>"$log" 2>&1; then
        echo "---- last lines of $log ----" >&2
        tail -n 25 "$log" >&2
        die "$what of $pkg ${VER[$pkg]} for $arch ($(triple_of "$arch")) failed" \
            "see $log; fix the cause (often a missing build tool: sh scripts/deps.sh win) and run this again"
    fi
}

build() { # pkg arch
    local pkg=$1 arch=$2 ver=${VER[$1]} triple tree bdir stage log prefix t0 old f
    triple=$(triple_of "$arch")
    tree="$SRC/${pkg}_$ver"
    bdir="$WORK/$pkg-$arch"
    stage="$WORK/$pkg-$arch.stage"
    log="$LOGS/$pkg-$arch.log"
    prefix="$DIR/$arch"
    t0=$(date +%s)
    rm -rf "$bdir" "$stage"
    rm -f "$STAMPS/$pkg-$arch.stamp"
    mkdir -p "$bdir" "$prefix"
    : >"$log"
    say "$pkg $ver for $arch ($triple): building (log: $log)"
    case "$pkg" in
    libsodium)
        step "$pkg" "$arch" configure "$log" \
            in_dir "$bdir" "$tree/configure" \
            --host="$triple" --prefix="$prefix" --disable-shared --enable-static \
            --disable-dependency-tracking
        step "$pkg" "$arch" make "$log" make -C "$bdir" -j"$JOBS"
        step "$pkg" "$arch" "make install" "$log" make -C "$bdir" install DESTDIR="$stage"
        ;;
    msgpack-c)
        write_toolchain "$arch"
        step "$pkg" "$arch" "cmake configure" "$log" \
            cmake -S "$tree" -B "$bdir" -G "Unix Makefiles" \
            -DCMAKE_TOOLCHAIN_FILE="$DIR/toolchain-$arch.cmake" \
            -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
            -DCMAKE_INSTALL_LIBDIR=lib \
            -DBUILD_SHARED_LIBS=OFF -DMSGPACK_ENABLE_SHARED=OFF -DMSGPACK_ENABLE_STATIC=ON \
            -DMSGPACK_BUILD_TESTS=OFF -DMSGPACK_BUILD_EXAMPLES=OFF \
            -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON -DCMAKE_DISABLE_FIND_PACKAGE_ZLIB=ON
        step "$pkg" "$arch" "cmake build" "$log" cmake --build "$bdir" -j "$JOBS"
        step "$pkg" "$arch" "cmake install" "$log" env DESTDIR="$stage" cmake --install "$bdir"
        ;;
    esac
    [ -d "$stage$prefix" ] || die "the $pkg install for $arch put nothing under $stage$prefix" "see $log"
    find "$stage$prefix" -name '*.la' -delete
    # Replace what an older build of this package installed, then copy.
    old="$STAMPS/$pkg-$arch.files"
    if [ -f "$old" ]; then
        while IFS= read -r f; do rm -f "$prefix/$f"; done <"$old"
    fi
    (cd "$stage$prefix" && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort) >"$old.new"
    cp -a "$stage$prefix/." "$prefix/"
    mv "$old.new" "$old"
    rm -rf "$bdir" "$stage"
    stamp_text "$pkg" "$ver" "$arch" >"$STAMPS/$pkg-$arch.stamp"
    say "$pkg $ver for $arch: installed into $prefix in $(($(date +%s) - t0))s"
}

start=$(date +%s)
for pkg in $PACKAGES; do
    todo=""
    for arch in $ARCHES; do
        is_current "$pkg" "${VER[$pkg]}" "$arch" || todo="$todo $arch"
    done
    if [ -z "$todo" ]; then
        say "$pkg ${VER[$pkg]}: up to date for $ARCHES"
        continue
    fi
    say "$pkg ${VER[$pkg]}: fetching and verifying the Debian source"
    fetch "$pkg"
    prepare "$pkg"
    for arch in $todo; do
        build "$pkg" "$arch"
    done
done

for pkg in $PACKAGES; do printf '%s %s\n' "$pkg" "${VER[$pkg]}"; done >"$VERSIONS.tmp"
mv "$VERSIONS.tmp" "$VERSIONS"
# Drop unpacked trees of versions no longer in use.
for tree in "$SRC"/*; do
    [ -e "$tree" ] || continue
    keep=0
    for pkg in $PACKAGES; do [ "$tree" = "$SRC/${pkg}_${VER[$pkg]}" ] && keep=1; done
    [ "$keep" = 1 ] || rm -rf "$tree"
done
say "done in $(($(date +%s) - start))s:$(for p in $PACKAGES; do printf ' %s %s,' "$p" "${VER[$p]}"; done | sed 's/,$//') for $ARCHES in $DIR"
