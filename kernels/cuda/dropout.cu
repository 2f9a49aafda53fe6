// Inverted dropout with Philox4x32-10 (kernels/philox.h). Element i is kept when the uniform for
// counter (counter_base + i) is >= p; one Philox call yields the uniforms of four consecutive
// counters, so a thread owns one Philox block (4 counters) and does one call for its 4 elements.
// Same bits-to-float mapping and the same `x * scale` as the CPU twin: masks and values are
// bit-identical. When counter_base % 4 == 0 and the pointers are aligned, a block's 4 elements
// are one float4 load and store; otherwise (or at the ends) they are handled one by one.
#include "kernels/cuda/common.cuh"
#include "kernels/philox.h"

namespace graft::cuda {
namespace {

__global__ void dropout_kernel(int64_t count, float p, float scale, uint64_t seed,
                               uint64_t counter_base, bool vec, const float* x, float* y) {
  const uint64_t first = counter_base >> 2;
  const uint64_t units = ((counter_base + static_cast<uint64_t>(count) - 1) >> 2) - first + 1;
  for (uint64_t u = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const Philox4 r = philox4x32_10(first + u, seed);
    // Element index of lane 0 of this block (may be negative for the first block).
    const int64_t i0 = static_cast<int64_t>((first + u) * 4 - counter_base);
    float keep[4];
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const float uni = static_cast<float>(r.v[l] >> 8) * (1.0f / 16777216.0f);
      keep[l] = uni >= p ? scale : 0.f;
    }
    if (vec && i0 >= 0 && i0 + 3 < count) {
      const float4 v = ld4(x + i0);
      // Multiply only kept elements so that dropped ones are exactly 0 (also for inf/NaN inputs),
      // as in the CPU twin's `u >= p ? x * scale : 0`.
      st4(y + i0,
          make_float4(keep[0] != 0.f ? v.x * scale : 0.f, keep[1] != 0.f ? v.y * scale : 0.f,
                      keep[2] != 0.f ? v.z * scale : 0.f, keep[3] != 0.f ? v.w * scale : 0.f));
    } else {
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const int64_t i = i0 + l;
        if (i >= 0 && i < count) y[i] = keep[l] != 0.f ? x[i] * scale : 0.f;
      }
    }
  }
}

}  // namespace

void dropout(int64_t count, float p, uint64_t seed, uint64_t counter_base, const float* x, float* y,
             cudaStream_t stream) {
  const std::string detail = "count=" + std::to_string(count) + " p=" + std::to_string(p);
  if (count < 0 || !(p >= 0.f && p < 1.f)) invalid("dropout", "bad arguments: " + detail);
  if (count == 0) return;
  const float scale = 1.0f / (1.0f - p);
  const bool vec = (counter_base & 3) == 0 && aligned16(x) && aligned16(y);
  const int64_t units = ceil_div(count + static_cast<int64_t>(counter_base & 3), 4);
  GRAFT_LAUNCH(grid_for(units, 256), 256, 0, stream, dropout_kernel)
  (count, p, scale, seed, counter_base, vec, x, y);
  CUDA_CHECK_LAUNCH("dropout_kernel", detail);
}

}  // namespace graft::cuda
