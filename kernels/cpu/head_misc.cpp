#include <cstring>

#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

// Picks a batch's rows out of the feature cache in shuffled order.
void gather_rows(int n, int cols, const float* src, const int32_t* rows, float* dst) {
#pragma omp parallel for schedule(static) if (int64_t(n) * cols > (1 << 16))
  for (int i = 0; i < n; ++i)
    std::memcpy(dst + size_t(i) * cols, src + size_t(rows[i]) * cols, sizeof(float) * cols);
}

}  // namespace graft::cpu::GRAFT_CPU_NS

namespace graft::cpu::GRAFT_CPU_NS {

void relu_backward(int64_t count, const float* y, float* dy) {
  for (int64_t i = 0; i < count; ++i) dy[i] = y[i] > 0.f ? dy[i] : 0.f;
}

}  // namespace graft::cpu::GRAFT_CPU_NS
