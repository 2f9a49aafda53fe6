#!/usr/bin/env bash
# Cross-compiles graft for aarch64 Linux (cmake/aarch64-linux-gnu.cmake: Debian's cross gcc and the
# arm64 multiarch libraries) into build-arm64, without CUDA and without -march=native, and runs the
# CPU tests there under qemu-aarch64 through ctest. Any build error or failing test fails the run.
#
#   scripts/cross-arm64.sh [ctest args]       e.g. scripts/cross-arm64.sh -R Conv2d
#
# Installs what is missing first: the cross compiler, qemu-user, and the arm64 -dev packages of
# graft's dependencies (dpkg --add-architecture arm64). Only the test executables named in
# ARM64_TESTS are built: by default the CPU kernels' tests, io's (weight files, image decoding,
# datasets) and the engine's model loading, planning and report, which together build and run in
# about three minutes on two cores. Every test runs on an emulated CPU, so GRAFT_TEST_SHAPES=small
# keeps the shape sweeps to their small cases; the training tests (test_backprop, test_trainer,
# test_grad_fixtures) still take from minutes to over ten under emulation and are left out. They
# run when named (ARM64_TESTS="test_cpu_ops test_backprop ..."), except the trainer tests that
# start the graft tool as a child process: they skip, as the tool is not built here, and would
# fail if it were, since qemu-user emulates the test executable only and the arm64 child cannot
# run unless the host has qemu registered with binfmt_misc. JOBS sets the build's parallelism
# (default: every core).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # see scripts/test.sh

log() { echo "cross-arm64: $*"; }
now() { date +%s%N; }
elapsed() {  # seconds since $1 (a now), to a tenth
  local ds=$((($(now) - $1) / 100000000))
  echo "$((ds / 10)).$((ds % 10))s"
}

build=${ARM64_BUILD_DIR:-build-arm64}
default_tests="test_cpu_ops test_backward_ops test_safetensors test_image test_dataset"
default_tests+=" test_engine test_loader test_report"
read -r -a tests <<<"${ARM64_TESTS:-$default_tests}"
jobs=${JOBS:-$(nproc)}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

# 1. Setup: the cross toolchain and emulator for the host, graft's dependencies for arm64. The
#    header-only ones (JSON, CLI11) are architecture-independent packages, shared with the host.
t=$(now)
HOST_PKGS=(cmake g++-aarch64-linux-gnu nlohmann-json3-dev libcli11-dev)
command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null ||
  HOST_PKGS+=(qemu-user)
ARM64_PKGS=(libturbojpeg0-dev:arm64 libpng-dev:arm64 libgtest-dev:arm64 libbenchmark-dev:arm64)
missing=()
for p in "${HOST_PKGS[@]}" "${ARM64_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the arm64 architecture to dpkg"
    $SUDO dpkg --add-architecture arm64
  fi
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  # --no-remove: the arm64 -dev packages must install beside the host's (same versions), never
  # in their place.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-remove --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
t_setup=$(elapsed "$t")
log "setup done in $t_setup"

# 2. Build: configure once, then only the chosen test executables (gtest discovery runs each
#    under qemu to list its tests).
t=$(now)
if [ ! -f "$build/CMakeCache.txt" ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # shellcheck disable=SC2086
  cmake -S . -B "$build" "${generator[@]}" --toolchain "$PWD/cmake/aarch64-linux-gnu.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DGRAFT_ENABLE_CUDA=OFF -DGRAFT_NATIVE=OFF ${CMAKE_ARGS:-} >/dev/null
fi
cmake --build "$build" -j"$jobs" --target "${tests[@]}"
t_build=$(elapsed "$t")
log "build of ${tests[*]} done in $t_build"

# 3. Test: every test of the executables built. The test executables left unbuilt show up in ctest
#    as <name>_NOT_BUILT, and the Python tests need a native graft: both are left out. A test that
#    hangs under the emulator fails after ARM64_TEST_TIMEOUT seconds instead of holding up CI.
t=$(now)
rc=0
GRAFT_TEST_SHAPES=${GRAFT_TEST_SHAPES:-small} ctest --test-dir "$build" --output-on-failure \
  -j"$(nproc)" --timeout "${ARM64_TEST_TIMEOUT:-300}" -E '_NOT_BUILT$|^(setup|py)\.' "$@" || rc=$?
t_test=$(elapsed "$t")
log "tests under qemu-aarch64 done in $t_test (exit $rc)"
log "timings: setup $t_setup, build $t_build, test $t_test"
exit "$rc"
