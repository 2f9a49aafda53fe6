#!/usr/bin/env bash
# Builds graft with its CUDA code emulated on the CPU (kernels/emu; no nvcc, no GPU) in build-emu
# and runs the whole test suite there with GRAFT_REQUIRE_GPU=1, so every CUDA test runs instead of
# skipping. What passes here is "checked under emulation", never "verified on a GPU".
#
#   scripts/emulation.sh [ctest args]      e.g. scripts/emulation.sh -R 'Cuda|Emulation'
#
# clang, for the emulation's shared-memory race check (kernels/emu/README.md); CC and CXX override.
# scripts/sanitize.sh runs the same build under AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # see scripts/test.sh
build=${EMU_BUILD_DIR:-build-emu}
export CC=${CC:-clang} CXX=${CXX:-clang++}
scripts/setup.sh
generator=()
command -v ninja >/dev/null && [ ! -f "$build/Makefile" ] && generator=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DGRAFT_CUDA_EMULATION=ON \
    ${CMAKE_ARGS:-} >/dev/null
fi
cmake --build "$build" -j"$(nproc)"
GRAFT_REQUIRE_GPU=1 ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
