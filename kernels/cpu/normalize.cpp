#include <vector>

#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

void normalize_u8(int64_t pixels, int c, const uint8_t* x, const float* mean, const float* std,
                  float* y) {
  // A uint8 has 256 values, so per channel the whole map fits a 1 KiB table computed with the
  // contract's exact formula; the per-pixel work becomes a lookup.
  std::vector<float> table(size_t(256) * c);
  for (int ch = 0; ch < c; ++ch)
    for (int v = 0; v < 256; ++v)
      table[size_t(ch) * 256 + v] = (float(v) / 255.0f - mean[ch]) / std[ch];
  const float* t = table.data();
#pragma omp parallel for schedule(static) if (pixels * c > 65536)
  for (int64_t p = 0; p < pixels; ++p)
    for (int ch = 0; ch < c; ++ch) y[p * c + ch] = t[ch * 256 + x[p * c + ch]];
}

}  // namespace graft::cpu::GRAFT_CPU_NS
