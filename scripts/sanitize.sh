#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan, then the whole ctest suite
# there. The build is the emulated CUDA build (kernels/emu: the CUDA kernels run on the CPU), so the
# sanitizers watch the CPU code and the CUDA kernels alike, and GRAFT_REQUIRE_GPU=1 makes every CUDA
# test run rather than skip. Any sanitizer report fails the run.
#
#   scripts/sanitize.sh [ctest args]
#
# clang, because the emulation's shared-memory race check needs clang's load and store hooks;
# OpenMP (libomp) thread pools and the emulation's fibers (announced to ASan at every switch) run
# clean under ASan and LSan. GRAFT_TEST_SHAPES=small keeps the CUDA tests' cases of at most 2^18
# elements, every code path still taken, so the sanitized emulation stays within minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
# ctest runs tests side by side, and several start OpenMP teams on the same cores: threads that
# spin while they wait for work then starve the others (a resume test took 15 minutes instead of 5
# seconds). Waiting threads sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

build=${ASAN_BUILD_DIR:-build-asan}
export CC=${CC:-clang} CXX=${CXX:-clang++}
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

generator=()
command -v ninja >/dev/null && [ ! -f "$build/Makefile" ] && generator=(-G Ninja)
# -O1 keeps stack traces exact and the compute-heavy tests fast enough; line tables are all the
# reports need, and build much faster than full debug information; asserts stay on
# (no NDEBUG), which the usual optimised build types would turn off.
# One CPU path (on x86-64, avx2, which every CI machine has) rather than all three: the kernels'
# sources are the same for every path, and scripts/test.sh runs each path's tests unsanitized.
paths=()
[ "$(uname -m)" = x86_64 ] && paths=(-DGRAFT_CPU_PATHS=avx2)
cmake -S . -B "$build" "${generator[@]}" "${paths[@]}" \
  -DGRAFT_CUDA_EMULATION=ON -DGRAFT_NATIVE=ON \
  -DCMAKE_BUILD_TYPE=Sanitize \
  -DCMAKE_C_FLAGS_SANITIZE="-O1 -gline-tables-only" \
  -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -gline-tables-only" \
  -DCMAKE_C_FLAGS="$sanitize" -DCMAKE_CXX_FLAGS="$sanitize" \
  -DCMAKE_EXE_LINKER_FLAGS="$sanitize" >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export GRAFT_REQUIRE_GPU=1 GRAFT_TEST_SHAPES=${GRAFT_TEST_SHAPES:-small}

# The test executables (gtest discovery runs each once at build time, sanitized too) and the
# graft binary the Python tests drive; the benchmarks are left out.
targets="graft $(cmake --build "$build" --target help | sed -n 's/^\(\(test\|ladder\)_[a-z0-9_]*\): phony$/\1/p')"
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets

ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
