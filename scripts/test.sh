#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite through ctest. On a machine without a GPU the build
# is the emulated one (scripts/build.sh), and every CUDA test runs under emulation: they are
# required to (GRAFT_REQUIRE_GPU=1), so none can skip unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."
# ctest runs tests side by side, and several start OpenMP teams on the same cores: threads that
# spin while they wait for work then starve the others (a resume test took 15 minutes instead of 5
# seconds). Waiting threads sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
scripts/setup.sh
scripts/build.sh
BUILD=${BUILD_DIR:-build}
if grep -q '^GRAFT_CUDA_EMULATION:BOOL=ON' "$BUILD/CMakeCache.txt"; then
  export GRAFT_REQUIRE_GPU=1
fi
ctest --test-dir "$BUILD" --output-on-failure -j"$(nproc)" "$@"
