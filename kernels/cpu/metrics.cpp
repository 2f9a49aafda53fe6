#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

void confusion_update(int n, int c, const float* logits, const int32_t* labels,
                      int64_t* confusion) {
  // Serial: n is a batch, and rows may hit the same cell.
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * c;
    int pred = 0;
    for (int j = 1; j < c; ++j)
      if (z[j] > z[pred]) pred = j;  // strict: the first of equal maxima wins
    confusion[int64_t(labels[i]) * c + pred] += 1;
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
