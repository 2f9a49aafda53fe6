#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU code and its tests in
# build-asan (CUDA off), then the whole ctest suite there. Any sanitizer report fails the run.
#
#   scripts/sanitize.sh [ctest args]        CC/CXX choose the compiler (default gcc/g++)
#
# gcc by default: the whole suite, OpenMP (libgomp) thread pools included, runs clean under ASan
# and LSan with it. CC=clang CXX=clang++ also works for the OpenMP code (libomp gave no reports
# either), but clang 14 cannot compile tests/test_image.cpp (a lambda capturing a structured
# binding needs clang 16).
set -euo pipefail
cd "$(dirname "$0")/.."
# ctest runs tests side by side, and several start OpenMP teams on the same cores: threads that
# spin while they wait for work then starve the others (a resume test took 15 minutes instead of 5
# seconds). Waiting threads sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

build=${ASAN_BUILD_DIR:-build-asan}
export CC=${CC:-gcc} CXX=${CXX:-g++}
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

generator=()
command -v ninja >/dev/null && [ ! -f "$build/Makefile" ] && generator=(-G Ninja)
# -O1 keeps stack traces exact and the compute-heavy tests fast enough; asserts stay on
# (no NDEBUG), which the usual optimised build types would turn off.
cmake -S . -B "$build" "${generator[@]}" \
  -DGRAFT_ENABLE_CUDA=OFF -DGRAFT_NATIVE=ON \
  -DCMAKE_BUILD_TYPE=Sanitize \
  -DCMAKE_C_FLAGS_SANITIZE="-O1 -g" -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g" \
  -DCMAKE_C_FLAGS="$sanitize" -DCMAKE_CXX_FLAGS="$sanitize" \
  -DCMAKE_EXE_LINKER_FLAGS="$sanitize" >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# The test executables (gtest discovery runs each once at build time, sanitized too) and the
# graft binary the Python tests drive; the benchmarks are left out.
targets="graft $(cmake --build "$build" --target help | sed -n 's/^\(test_[a-z0-9_]*\): phony$/\1/p')"
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets

ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
