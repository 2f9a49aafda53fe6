#include <algorithm>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

void bias_act(int64_t rows, int c, const float* x, const float* bias, const float* residual,
              Act act, float* y) {
  // Rows are independent; y may alias x, which is fine because each element is read before it is
  // written by the same iteration.
#pragma omp parallel for schedule(static) if (rows * c > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * c;
    const float* rr = residual ? residual + r * c : nullptr;
    float* yr = y + r * c;
    for (int j = 0; j < c; ++j) {
      float v = xr[j];
      if (bias) v += bias[j];
      if (rr) v += rr[j];
      yr[j] = apply_act(v, act);
    }
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
