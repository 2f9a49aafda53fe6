#!/usr/bin/env bash
# Configures and builds graft into build/.
#
# With a GPU in sight (nvidia-smi lists one) and nvcc installed, the CUDA kernels are compiled for
# that GPU. Without one, the build is the emulated one (-DGRAFT_CUDA_EMULATION=ON, kernels/emu):
# the CUDA kernels compiled with clang to run on the CPU, so that the CUDA tests run rather than
# skip, and no minutes go into device code for GPUs that are not there. `graft --device auto`
# never picks the emulated device; the CPU path is as fast as in any build. CMAKE_ARGS chooses
# otherwise, e.g. CMAKE_ARGS=-DCMAKE_CUDA_ARCHITECTURES=90 for real GPU code without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  args=(-DCMAKE_BUILD_TYPE=Release)
  if [ -z "${CMAKE_ARGS:-}" ] && ! nvidia-smi -L >/dev/null 2>&1; then
    echo "build: no GPU here: CUDA emulated on the CPU (kernels/emu/README.md), built with clang"
    args+=(-DGRAFT_CUDA_EMULATION=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
  fi
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # shellcheck disable=SC2086
  cmake -S . -B "$BUILD" "${generator[@]}" "${args[@]}" ${CMAKE_ARGS:-}
fi
cmake --build "$BUILD" -j"$(nproc)"
