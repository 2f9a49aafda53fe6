// Optimiser updates over every trainable tensor in ONE launch. The table of tensors (pointers,
// sizes, an exclusive prefix sum of their sizes in units of 4-element groups) is copied into a
// __constant__ array on the launch's stream (cudaMemcpyToSymbolAsync, so it is ordered after the
// previous launch that read it and before this one); a thread finds its group's tensor by a binary
// search of the prefix sums (10 steps for 1024 tensors, warp-uniform except where a warp straddles
// two tensors, so the constant cache broadcasts). A group whose 4 elements are in range and whose
// pointers are 16-byte aligned is updated with float4 loads/stores; others element by element. The
// arithmetic is the CPU twin's, term for term (PyTorch's SGD and AdamW arrangements).
//
// The table is one per device (a __constant__ symbol), so optimiser calls on two different streams
// of one device must not overlap; the trainer issues them on its one compute stream. Up to
// kMaxParams tensors per call (EfficientNet-Lite0 fine-tuned end to end has ~130); more throws.
// Fine-tuning's 130-tensor tables were compiled here but have not yet run on a GPU.
#include <cmath>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

constexpr int kMaxParams = 1000;

// One tensor of the table: 64 bytes, 62.5 KB for 1000 (the __constant__ limit is 64 KB a module).
struct ParamEntry {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t group_start;  // exclusive prefix sum of ceil(count / 4)
  int64_t count;
  float coef;  // SGD: weight_decay; AdamW: 1 - lr_t * weight_decay
  float rate;  // SGD: lr_t; AdamW: lr_t / bc1 (lr_t = lr * lr_scale, the tensor's own rate)
  int vec;     // all pointers 16-byte aligned
};

__constant__ ParamEntry c_params[kMaxParams];

struct SgdCoef {
  float momentum;
};
struct AdamCoef {
  float b1, b2, eps, inv_sqrt_bc2;
};

__device__ __forceinline__ void sgd_one(float& p, float g, float& m, float wd, float lr,
                                        const SgdCoef& c) {
  const float gi = g + wd * p;
  m = c.momentum * m + gi;
  p -= lr * m;
}

__device__ __forceinline__ void adam_one(float& p, float g, float& m, float& v, float decay,
                                         float step_size, const AdamCoef& c) {
  m = c.b1 * m + (1.0f - c.b1) * g;
  v = c.b2 * v + (1.0f - c.b2) * g * g;
  p = p * decay - step_size * m / (sqrtf(v) * c.inv_sqrt_bc2 + c.eps);
}

// The tensor owning group q: the last entry whose group_start <= q (empty tensors share their
// successor's start and are never chosen, since the successor comes later).
__device__ __forceinline__ int find_tensor(int num, int64_t q) {
  int lo = 0, hi = num - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (c_params[mid].group_start <= q)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

template <bool ADAM>
__global__ void optim_kernel(int num, int64_t groups, const SgdCoef sc, const AdamCoef ac) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < groups;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const ParamEntry& r = c_params[find_tensor(num, q)];
    const int64_t e0 = (q - r.group_start) * 4;
    if (r.vec && e0 + 4 <= r.count) {
      float4 p = ld4(r.param + e0);
      const float4 g = ld4(r.grad + e0);
      float4 m = ld4(r.m + e0);
      if constexpr (ADAM) {
        float4 v = ld4(r.v + e0);
        adam_one(p.x, g.x, m.x, v.x, r.coef, r.rate, ac);
        adam_one(p.y, g.y, m.y, v.y, r.coef, r.rate, ac);
        adam_one(p.z, g.z, m.z, v.z, r.coef, r.rate, ac);
        adam_one(p.w, g.w, m.w, v.w, r.coef, r.rate, ac);
        st4(r.v + e0, v);
      } else {
        sgd_one(p.x, g.x, m.x, r.coef, r.rate, sc);
        sgd_one(p.y, g.y, m.y, r.coef, r.rate, sc);
        sgd_one(p.z, g.z, m.z, r.coef, r.rate, sc);
        sgd_one(p.w, g.w, m.w, r.coef, r.rate, sc);
      }
      st4(r.m + e0, m);
      st4(r.param + e0, p);
    } else {
      for (int64_t e = e0; e < e0 + 4 && e < r.count; ++e) {
        float p = r.param[e], m = r.m[e];
        if constexpr (ADAM) {
          float v = r.v[e];
          adam_one(p, r.grad[e], m, v, r.coef, r.rate, ac);
          r.v[e] = v;
        } else {
          sgd_one(p, r.grad[e], m, r.coef, r.rate, sc);
        }
        r.m[e] = m;
        r.param[e] = p;
      }
    }
  }
}

// Validates the list and builds the table; returns the total number of 4-element groups.
// bc1: AdamW's first bias correction (in double, as the CPU twin computes it); unused by SGD.
int64_t pack_params(const char* op, const ParamRef* params, int num_params, bool adam, float lr,
                    double bc1, std::vector<ParamEntry>* table) {
  if (num_params < 0 || (num_params > 0 && !params))
    invalid(op, "bad parameter list (num_params=" + std::to_string(num_params) + ")");
  if (num_params > kMaxParams)
    invalid(op, "at most " + std::to_string(kMaxParams) + " parameter tensors per launch, got " +
                    std::to_string(num_params));
  table->resize(size_t(num_params));
  int64_t start = 0;
  for (int t = 0; t < num_params; ++t) {
    const ParamRef& r = params[t];
    if (r.count < 0) invalid(op, "tensor " + std::to_string(t) + " has a negative count");
    if (r.count > 0 && (!r.param || !r.grad || !r.m || (adam && !r.v)))
      invalid(op, "tensor " + std::to_string(t) + " (count " + std::to_string(r.count) +
                      ") is missing param, grad or optimiser state");
    ParamEntry& e = (*table)[size_t(t)];
    e.param = r.param;
    e.grad = r.grad;
    e.m = r.m;
    e.v = r.v;
    e.group_start = start;
    e.count = r.count;
    const float lr_t = lr * r.lr_scale;
    e.coef = adam ? 1.0f - lr_t * r.weight_decay : r.weight_decay;
    e.rate = adam ? float(lr_t / bc1) : lr_t;
    e.vec = aligned16(r.param) && aligned16(r.grad) && aligned16(r.m) && (!adam || aligned16(r.v));
    start += ceil_div(r.count, 4);
  }
  return start;
}

// Copies the table into c_params on `stream` (after any earlier launch on it that read the old
// table). From pageable host memory the runtime stages the bytes before returning, so the vector
// may be refilled at once.
void upload_table(const std::vector<ParamEntry>& table, cudaStream_t stream) {
  CUDA_CHECK(cudaMemcpyToSymbolAsync(c_params, table.data(), table.size() * sizeof(ParamEntry), 0,
                                     cudaMemcpyHostToDevice, stream));
}

// The host copy of the table, kept per thread so a training step allocates nothing once the first
// step has sized it (the entries change every step with the learning rate, so they are rebuilt).
std::vector<ParamEntry>& host_table() {
  thread_local std::vector<ParamEntry> table;
  return table;
}

}  // namespace

void sgd_momentum(const ParamRef* params, int num_params, float lr, float momentum,
                  cudaStream_t stream) {
  std::vector<ParamEntry>& table = host_table();
  const int64_t groups = pack_params("sgd_momentum", params, num_params, false, lr, 1.0, &table);
  if (groups == 0) return;
  upload_table(table, stream);
  GRAFT_LAUNCH(grid_for(groups, 256), 256, 0, stream, optim_kernel<false>)
  (num_params, groups, SgdCoef{momentum}, AdamCoef{});
  CUDA_CHECK_LAUNCH("sgd_momentum_kernel",
                    "tensors=" + std::to_string(num_params) + " groups=" + std::to_string(groups));
}

void adamw(const ParamRef* params, int num_params, const AdamWConfig& cfg, cudaStream_t stream) {
  if (cfg.step < 1) invalid("adamw", "step must be >= 1, got " + std::to_string(cfg.step));
  // Bias corrections in double on the host, exactly as the CPU twin.
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(cfg.step));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(cfg.step));
  std::vector<ParamEntry>& table = host_table();
  const int64_t groups = pack_params("adamw", params, num_params, true, cfg.lr, bc1, &table);
  if (groups == 0) return;
  const AdamCoef ac{cfg.beta1, cfg.beta2, cfg.eps, float(1.0 / std::sqrt(bc2))};
  upload_table(table, stream);
  GRAFT_LAUNCH(grid_for(groups, 256), 256, 0, stream, optim_kernel<true>)
  (num_params, groups, SgdCoef{}, ac);
  CUDA_CHECK_LAUNCH("adamw_kernel",
                    "tensors=" + std::to_string(num_params) + " groups=" + std::to_string(groups));
}

}  // namespace graft::cuda
