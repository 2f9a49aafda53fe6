#!/usr/bin/env bash
# Proves the emulated CUDA tests can fail: breaks a kernel on purpose, rebuilds the emulated build,
# and expects the CUDA tests to catch it; then restores the source. One line per mutant, and exit
# status 1 if any mutant survives (its tests still pass).
#
#   scripts/emulation-mutants.sh            uses build-emu (scripts/emulation.sh makes it)
#
# The mutants: a wrong exponential in the softmax, a sum flipped in the depthwise backward's filter
# reduction, the barrier deleted from the depthwise forward.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${EMU_BUILD_DIR:-build-emu}
[ -f "$build/CMakeCache.txt" ] || { echo "no $build: run scripts/emulation.sh first" >&2; exit 2; }

mutants=(
  "kernels/cuda/softmax.cu|sum += expf(z\[i\] - m);|sum += expf(z[i]);|test_cuda_ops|CudaOps.Softmax*"
  "kernels/cuda/conv_backward_depthwise.cu|s.x += v.x, s.y += v.y|s.x -= v.x, s.y += v.y|test_cuda_backward|CudaBackward.Depthwise*"
  "kernels/cuda/conv_depthwise.cu|^  __syncthreads();$|  // barrier removed|test_cuda_ops|CudaOps.ConvDepthwise*"
)
survived=0
for m in "${mutants[@]}"; do
  IFS='|' read -r file from to test filter <<<"$m"
  cp "$file" "$file.orig"
  # Restored with a fresh time stamp, so the next build recompiles it.
  trap 'mv -f "$file.orig" "$file"; touch "$file"' EXIT
  sed -i "s#$from#$to#" "$file"
  if cmp -s "$file" "$file.orig"; then
    echo "mutant not applied (pattern gone?): $file: $from" >&2
    exit 2
  fi
  cmake --build "$build" --target "$test" -j"$(nproc)" >/dev/null
  if GRAFT_REQUIRE_GPU=1 "$build/tests/$test" --gtest_filter="$filter" >"$build/mutant.log" 2>&1; then
    echo "SURVIVED  $file: '$from' -> '$to' ($test $filter still passes)"
    survived=1
  else
    echo "caught    $file: '$from' -> '$to' ($(grep -c '^\[  FAILED  \] .* ms)$' "$build/mutant.log") of $test's tests failed: $(grep -m1 -o 'graft emulation: [a-z -]*' "$build/mutant.log" || echo 'wrong results'))"
  fi
  mv -f "$file.orig" "$file"
  touch "$file"
  trap - EXIT
done
cmake --build "$build" -j"$(nproc)" >/dev/null  # back to the real kernels
exit $survived
