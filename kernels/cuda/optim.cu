// Optimiser updates over every head parameter tensor in ONE launch. Up to kMaxParams ParamRefs
// travel by value in the kernel arguments with an exclusive prefix sum of their sizes in units of
// 4-element groups; a thread's group index picks its tensor by a short scan of that prefix (at
// most 16 compares, no memory traffic). A group whose 4 elements are in range and whose pointers
// are 16-byte aligned is updated with float4 loads/stores; others element by element. The
// arithmetic is the CPU twin's, term for term (PyTorch's SGD and AdamW arrangements).
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

constexpr int kMaxParams = 16;

struct ParamPack {
  ParamRef refs[kMaxParams];
  int64_t group_start[kMaxParams + 1];  // prefix sum of ceil(count / 4)
  float decay[kMaxParams];              // AdamW: 1 - lr * weight_decay, per tensor
  bool vec[kMaxParams];
  int num;
};

struct SgdCoef {
  float lr, momentum;
};
struct AdamCoef {
  float b1, b2, eps, step_size, inv_sqrt_bc2;
};

__device__ __forceinline__ void sgd_one(float& p, float g, float& m, float wd, const SgdCoef& c) {
  const float gi = g + wd * p;
  m = c.momentum * m + gi;
  p -= c.lr * m;
}

__device__ __forceinline__ void adam_one(float& p, float g, float& m, float& v, float decay,
                                         const AdamCoef& c) {
  m = c.b1 * m + (1.0f - c.b1) * g;
  v = c.b2 * v + (1.0f - c.b2) * g * g;
  p = p * decay - c.step_size * m / (sqrtf(v) * c.inv_sqrt_bc2 + c.eps);
}

template <bool ADAM>
__global__ void optim_kernel(const ParamPack pk, const SgdCoef sc, const AdamCoef ac) {
  const int64_t groups = pk.group_start[pk.num];
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < groups;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int t = 0;
#pragma unroll
    for (int k = 1; k < kMaxParams; ++k)
      if (k < pk.num && q >= pk.group_start[k]) t = k;
    const ParamRef& r = pk.refs[t];
    const int64_t e0 = (q - pk.group_start[t]) * 4;
    if (pk.vec[t] && e0 + 4 <= r.count) {
      float4 p = ld4(r.param + e0);
      const float4 g = ld4(r.grad + e0);
      float4 m = ld4(r.m + e0);
      if constexpr (ADAM) {
        float4 v = ld4(r.v + e0);
        adam_one(p.x, g.x, m.x, v.x, pk.decay[t], ac);
        adam_one(p.y, g.y, m.y, v.y, pk.decay[t], ac);
        adam_one(p.z, g.z, m.z, v.z, pk.decay[t], ac);
        adam_one(p.w, g.w, m.w, v.w, pk.decay[t], ac);
        st4(r.v + e0, v);
      } else {
        sgd_one(p.x, g.x, m.x, r.weight_decay, sc);
        sgd_one(p.y, g.y, m.y, r.weight_decay, sc);
        sgd_one(p.z, g.z, m.z, r.weight_decay, sc);
        sgd_one(p.w, g.w, m.w, r.weight_decay, sc);
      }
      st4(r.m + e0, m);
      st4(r.param + e0, p);
    } else {
      for (int64_t e = e0; e < e0 + 4 && e < r.count; ++e) {
        float p = r.param[e], m = r.m[e];
        if constexpr (ADAM) {
          float v = r.v[e];
          adam_one(p, r.grad[e], m, v, pk.decay[t], ac);
          r.v[e] = v;
        } else {
          sgd_one(p, r.grad[e], m, r.weight_decay, sc);
        }
        r.m[e] = m;
        r.param[e] = p;
      }
    }
  }
}

ParamPack pack_params(const char* op, const ParamRef* params, int num_params, bool need_v,
                      float lr) {
  if (num_params < 0 || (num_params > 0 && !params))
    invalid(op, "bad parameter list (num_params=" + std::to_string(num_params) + ")");
  if (num_params > kMaxParams)
    invalid(op, "at most " + std::to_string(kMaxParams) + " parameter tensors per launch, got " +
                    std::to_string(num_params));
  ParamPack pk{};
  pk.num = num_params;
  pk.group_start[0] = 0;
  for (int t = 0; t < num_params; ++t) {
    const ParamRef& r = params[t];
    if (r.count < 0) invalid(op, "tensor " + std::to_string(t) + " has a negative count");
    if (r.count > 0 && (!r.param || !r.grad || !r.m || (need_v && !r.v)))
      invalid(op, "tensor " + std::to_string(t) + " (count " + std::to_string(r.count) +
                      ") is missing param, grad or optimiser state");
    pk.refs[t] = r;
    pk.group_start[t + 1] = pk.group_start[t] + ceil_div(r.count, 4);
    pk.decay[t] = 1.0f - lr * r.weight_decay;
    pk.vec[t] =
        aligned16(r.param) && aligned16(r.grad) && aligned16(r.m) && (!need_v || aligned16(r.v));
  }
  return pk;
}

}  // namespace

void sgd_momentum(const ParamRef* params, int num_params, float lr, float momentum,
                  cudaStream_t stream) {
  const ParamPack pk = pack_params("sgd_momentum", params, num_params, false, lr);
  const int64_t groups = pk.group_start[pk.num];
  if (groups == 0) return;
  optim_kernel<false>
      <<<grid_for(groups, 256), 256, 0, stream>>>(pk, SgdCoef{lr, momentum}, AdamCoef{});
  CUDA_CHECK_LAUNCH("sgd_momentum_kernel",
                    "tensors=" + std::to_string(num_params) + " groups=" + std::to_string(groups));
}

void adamw(const ParamRef* params, int num_params, const AdamWConfig& cfg, cudaStream_t stream) {
  if (cfg.step < 1) invalid("adamw", "step must be >= 1, got " + std::to_string(cfg.step));
  const ParamPack pk = pack_params("adamw", params, num_params, true, cfg.lr);
  const int64_t groups = pk.group_start[pk.num];
  if (groups == 0) return;
  // Bias corrections in double on the host, exactly as the CPU twin.
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(cfg.step));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(cfg.step));
  const AdamCoef ac{cfg.beta1, cfg.beta2, cfg.eps, float(cfg.lr / bc1),
                    float(1.0 / std::sqrt(bc2))};
  optim_kernel<true><<<grid_for(groups, 256), 256, 0, stream>>>(pk, SgdCoef{}, ac);
  CUDA_CHECK_LAUNCH("adamw_kernel",
                    "tensors=" + std::to_string(num_params) + " groups=" + std::to_string(groups));
}

}  // namespace graft::cuda
