# Thin wrapper over CMake presets; see README.md and INSTALL.
PRESET ?= dev
BUILD_DIR = build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local
CTEST_ARGS ?=

.PHONY: all build deps test-deps run test asan fuzz release install clean format

all: build

deps:
	@sh scripts/deps.sh

test-deps:
	@sh scripts/deps.sh test

build/CMakeCache.txt:
	cmake --preset dev

build: build/CMakeCache.txt
	cmake --build --preset dev -j $(JOBS)

# Start one node on the embedded default, in the foreground.
run: deps build
	./build/relaymesh serve

test: test-deps build
	ctest --preset dev -j $(JOBS) $(CTEST_ARGS)

asan: test-deps
	cmake --preset asan
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS) $(CTEST_ARGS)

fuzz: test-deps
	cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS)

release: deps
	cmake --preset release -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	cmake --build --preset release -j $(JOBS)

install: release
	sh scripts/install.sh "$(PREFIX)" "$(DESTDIR)"

format:
	clang-format -i common/*.[ch] store/*.[ch] node/*.[ch] mesh/*.[ch] bridge/*.[ch] tests/unit/*.c tests/tools/*.c fuzz/*.c

clean:
	rm -rf build build-asan build-fuzz build-release
