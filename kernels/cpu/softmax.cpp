#include <algorithm>
#include <cmath>

#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

void softmax(int n, int c, const float* x, float* y) {
  // Subtracting the row max keeps exp() in range for any logits (1000 and -1000 alike).
#pragma omp parallel for schedule(static) if (int64_t(n) * c > 16384)
  for (int i = 0; i < n; ++i) {
    const float* xr = x + int64_t(i) * c;
    float* yr = y + int64_t(i) * c;
    float m = xr[0];
    for (int j = 1; j < c; ++j) m = std::max(m, xr[j]);
    float sum = 0.f;
    for (int j = 0; j < c; ++j) {
      const float e = std::exp(xr[j] - m);
      yr[j] = e;  // y may alias x: xr[j] is dead once read here
      sum += e;
    }
    const float inv = 1.f / sum;
    for (int j = 0; j < c; ++j) yr[j] *= inv;
  }
}

void softmax_xent(int n, int c, const float* logits, const int32_t* labels, float smoothing,
                  float grad_scale, float* loss, float* dlogits) {
  // With sum_j q_j = 1: loss = logsumexp(z) - sum_j q_j z_j, so no log of a probability is taken
  // and a confidently wrong row gives a large finite loss rather than inf.
  const float off = smoothing / float(c), on = 1.f - smoothing + off;
#pragma omp parallel for schedule(static) if (int64_t(n) * c > 16384)
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * c;
    const int label = labels[i];
    float m = z[0];
    for (int j = 1; j < c; ++j) m = std::max(m, z[j]);
    float sum = 0.f, zsum = 0.f;
    for (int j = 0; j < c; ++j) {
      sum += std::exp(z[j] - m);
      zsum += z[j] - m;
    }
    const float log_sum = std::log(sum);
    // sum_j q_j (z_j - m) = off * sum_j (z_j - m) + (on - off) * (z_label - m)
    loss[i] = log_sum - (off * zsum + (on - off) * (z[label] - m));
    if (dlogits) {
      float* d = dlogits + int64_t(i) * c;
      const float inv = 1.f / sum;
      for (int j = 0; j < c; ++j) {
        const float q = j == label ? on : off;
        d[j] = grad_scale * (std::exp(z[j] - m) * inv - q);
      }
    }
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
