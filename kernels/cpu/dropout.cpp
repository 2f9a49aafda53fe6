#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"
#include "kernels/philox.h"

namespace graft::cpu::GRAFT_CPU_NS {

void dropout(int64_t count, float p, uint64_t seed, uint64_t counter_base, const float* x,
             float* y) {
  const float scale = 1.0f / (1.0f - p);
  // One Philox block yields the uniforms of four consecutive counters; draw each block once
  // instead of once per element. Chunks may start mid-block: the lane comes from the counter.
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (count > 2 * kChunk)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    int64_t i = ch * kChunk;
    const int64_t end = i + kChunk < count ? i + kChunk : count;
    while (i < end) {
      const uint64_t ctr = counter_base + uint64_t(i);
      const Philox4 r = philox4x32_10(ctr >> 2, seed);
      for (unsigned lane = unsigned(ctr & 3); lane < 4 && i < end; ++lane, ++i) {
        // Same bits-to-float mapping as philox_uniform, so masks match the CUDA kernel exactly.
        const float u = static_cast<float>(r.v[lane] >> 8) * (1.0f / 16777216.0f);
        y[i] = u >= p ? x[i] * scale : 0.0f;
      }
    }
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
