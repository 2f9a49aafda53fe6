// The FMA ceiling of one core on this path: independent multiply-add chains, as many as the path's
// accumulator budget, so that neither latency nor loads limit them. Benchmarks report the kernels'
// speed as a share of this.
#include <cstdint>

#include "kernels/cpu/kernel_table.h"
#include "kernels/cpu/simd.h"

namespace graft::cpu::GRAFT_CPU_NS {

double fma_peak(int64_t iters, float* sink) {
  constexpr int kChains = kAccRegs;
  Vec acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = splat(float(i) + *sink);
  const Vec a = splat(0.999999f), b = splat(1e-7f);
  // Fully unrolled so that the chains live in registers; without fast-math the compiler may not
  // fold repeated multiply-adds, so every one is executed (as an FMA where the path has one).
  for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * a + b;
  float s = 0.f;
  for (int i = 0; i < kChains; ++i) s += acc[i][0];
  *sink = s;
  return double(iters) * kChains * kVec * 2;
}

}  // namespace graft::cpu::GRAFT_CPU_NS
