# Cross-compile win32/ for Windows x86 with mingw-w64 (Debian:
# gcc-mingw-w64-i686). Used by scripts/win-build.sh:
#   cmake -S win32 -B OUT -DCMAKE_TOOLCHAIN_FILE=win32/cmake/mingw-x86.cmake \
#         -DRM_WIN_DEPS=build/win-deps/x86
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR i686)
set(RM_MINGW_TRIPLE i686-w64-mingw32)
set(CMAKE_C_COMPILER ${RM_MINGW_TRIPLE}-gcc)
set(CMAKE_RC_COMPILER ${RM_MINGW_TRIPLE}-windres)
# Libraries and headers come from the mingw-w64 sysroot; the win-deps
# folder (RM_WIN_DEPS) is given to the compiler by path, not searched.
set(CMAKE_FIND_ROOT_PATH /usr/${RM_MINGW_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
