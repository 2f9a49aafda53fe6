#include <cmath>

#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

void sgd_momentum(const ParamRef* params, int num_params, float lr, float momentum) {
  for (int t = 0; t < num_params; ++t) {
    const ParamRef& r = params[t];
    float* p = r.param;
    float* m = r.m;
    const float* g = r.grad;
    const float wd = r.weight_decay, lr_t = lr * r.lr_scale;
#pragma omp parallel for simd schedule(static) if (r.count > 65536)
    for (int64_t i = 0; i < r.count; ++i) {
      const float gi = g[i] + wd * p[i];
      m[i] = momentum * m[i] + gi;
      p[i] -= lr_t * m[i];
    }
  }
}

void adamw(const ParamRef* params, int num_params, const AdamWConfig& cfg) {
  // PyTorch's arrangement: step = lr / bc1, denom = sqrt(v) / sqrt(bc2) + eps.
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(cfg.step));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(cfg.step));
  const float inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps;
  for (int t = 0; t < num_params; ++t) {
    const ParamRef& r = params[t];
    float* p = r.param;
    float* m = r.m;
    float* v = r.v;
    const float* g = r.grad;
    const float lr_t = cfg.lr * r.lr_scale;
    const float step_size = float(lr_t / bc1), decay = 1.0f - lr_t * r.weight_decay;
#pragma omp parallel for simd schedule(static) if (r.count > 65536)
    for (int64_t i = 0; i < r.count; ++i) {
      const float gi = g[i];
      m[i] = b1 * m[i] + (1.0f - b1) * gi;
      v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
      p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    }
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
