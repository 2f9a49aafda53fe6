#!/usr/bin/env bash
# Builds graft as a user installing it would, and checks the installed tool stands on its own:
#   * from a copy of the committed sources, without tests or benchmarks (-DGRAFT_BUILD_TESTS=OFF,
#     so neither GoogleTest nor Google Benchmark is needed) and without -march=native;
#   * CUDA, when nvcc is here, for every architecture of the portable default (this machine has no
#     GPU), so a kernel that does not compile for one of them fails here;
#   * the CUDA tests and benchmarks then compiled in that build (not run: no GPU), since the test
#     suite itself runs the emulated build (scripts/build.sh) on a machine without a GPU;
#   * `cmake --install` into a prefix, then the sources and the build are deleted and the installed
#     graft must still report its version and architectures, convert a checkpoint, and predict;
#   * the installed graft keeps AVX and AVX-512 instructions inside their CPU paths, and picks the
#     avx2 and sse2 paths on emulated CPUs that lack AVX-512 or AVX (scripts/check-cpu-paths.sh).
# Usage: scripts/check-install.sh [WORK_DIR]   (needs scripts/setup.sh to have run: it uses the
# downloaded EfficientNet-Lite0 checkpoint and sample photos)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
PTH=$ROOT/.cache/efficientnet-lite0-57934424.pth
PHOTO=$ROOT/.cache/photos/chelsea.png
for f in "$PTH" "$PHOTO"; do
  [ -f "$f" ] || { echo "check-install: $f is missing; run scripts/setup.sh" >&2; exit 1; }
done

echo "check-install: copying the committed sources"
git archive --format=tar HEAD | (mkdir -p "$WORK/src" && tar -x -C "$WORK/src")
echo "check-install: configuring a portable build without tests"
cmake -S "$WORK/src" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGRAFT_BUILD_TESTS=OFF \
  -DGRAFT_NATIVE=OFF ${CMAKE_ARGS:-} >"$WORK/configure.log"
grep "graft:" "$WORK/configure.log" || true
start=$SECONDS
cmake --build "$WORK/build" -j"$(nproc)" >"$WORK/build.log" 2>&1 || {
  grep -E "error|Error" "$WORK/build.log" | head -40 >&2
  echo "check-install: the portable build failed" >&2
  exit 1
}
echo "check-install: built in $((SECONDS - start)) s"
cmake --install "$WORK/build" --prefix "$WORK/prefix" >/dev/null
if [ -n "$(grep '^CMAKE_CUDA_COMPILER:' "$WORK/build/CMakeCache.txt" | cut -d= -f2)" ]; then
  # The CUDA tests and benchmarks of the real (nvcc) build, compiled here against the kernels just
  # built: machines without a GPU run the emulated build, so this is where their real-CUDA
  # compilation (cuBLAS and cuDNN yardsticks included) is checked before a GPU session needs it.
  echo "check-install: compiling the CUDA tests and benchmarks of the nvcc build"
  cmake "$WORK/build" -DGRAFT_BUILD_TESTS=ON >>"$WORK/configure.log"
  start=$SECONDS
  cmake --build "$WORK/build" -j"$(nproc)" --target test_cuda_ops test_cuda_backward \
    test_cuda_engine bench_cuda_ops bench_step bench_trunk >"$WORK/build-tests.log" 2>&1 || {
    grep -E "error|Error" "$WORK/build-tests.log" | head -40 >&2
    echo "check-install: the CUDA tests of the nvcc build do not compile" >&2
    exit 1
  }
  echo "check-install: CUDA tests and benchmarks compiled in $((SECONDS - start)) s"
fi
rm -rf "$WORK/src" "$WORK/build"

G=$WORK/prefix/bin/graft
fail() { echo "check-install: FAIL: $*" >&2; exit 1; }
cd "$WORK"  # nowhere near the sources
unset GRAFT_TOOLS_DIR
"$G" --version | tee "$WORK/version.txt"
"$ROOT/scripts/check-cpu-paths.sh" "$G" || fail "code beyond x86-64's baseline outside its CPU path"
grep -q "^graft [0-9]" "$WORK/version.txt" || fail "--version does not print the version"
if command -v nvcc >/dev/null; then
  for a in 75 80 86 89 90 100 120; do
    if nvcc --list-gpu-code | grep -qx "sm_$a"; then
      grep -q "sm_$a\b" "$WORK/version.txt" || fail "--version does not list sm_$a"
    fi
  done
fi
"$G" convert --help | grep -q "efficientnet_lite0" || fail "convert --help does not list archs"
"$G" convert "$PTH" -o "$WORK/lite0.safetensors" --arch efficientnet_lite0 ||
  fail "the installed graft cannot convert"
"$G" inspect "$WORK/lite0.safetensors" >/dev/null || fail "inspect of the converted file"
"$G" predict --model "$WORK/lite0.safetensors" --top 1 "$PHOTO" | tee "$WORK/predict.txt"
grep -q '"label":"tiger cat"\|"label":"tabby' "$WORK/predict.txt" ||
  fail "predict from the installed graft does not see a cat in chelsea.png"
echo "check-install: ok"
