// The optimiser ladder: AdamW and SGD with momentum over a table of tensors shaped like a network's
// (weights of many sizes, small biases), from a launch per tensor to today's single launch over a
// table in constant memory (kernels/cuda/optim.cu). Each version is checked against the CPU twin
// (cpu::adamw, cpu::sgd_momentum) and timed. bench/worklog-cuda-memory.md has the predictions.
//
//   ladder_optimizer [VERSION]     (the AdamW ladder, then the SGD one)
//
// The arithmetic is the twin's, term for term (PyTorch's arrangements). Memory-bound: AdamW reads
// param, grad, m and v and writes param, m and v (28 bytes a parameter), SGD 20 bytes.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

// The per-tensor constants, computed on the host as cuda::adamw and cuda::sgd_momentum do.
struct Step {
  bool adam;
  float coef, rate;                      // AdamW: decay, lr_t / bc1; SGD: weight decay, lr_t
  float b1, b2, eps, inv_sqrt_bc2, mom;  // AdamW's betas and bias correction; SGD's momentum
};

__device__ __forceinline__ void update(float& p, float g, float& m, float& v, const Step& s) {
  if (s.adam) {
    m = s.b1 * m + (1.0f - s.b1) * g;
    v = s.b2 * v + (1.0f - s.b2) * g * g;
    p = p * s.coef - s.rate * m / (sqrtf(v) * s.inv_sqrt_bc2 + s.eps);
  } else {
    const float gi = g + s.coef * p;
    m = s.mom * m + gi;
    p -= s.rate * m;
  }
}

// v1: a launch per tensor, a thread an element.
__global__ void step_elements(int64_t count, float* p, const float* g, float* m, float* v, Step s) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  float pi = p[i], mi = m[i], vi = s.adam ? v[i] : 0.f;
  update(pi, g[i], mi, vi, s);
  p[i] = pi;
  m[i] = mi;
  if (s.adam) v[i] = vi;
}

// v2: a launch per tensor, a thread 4 elements with 16-byte loads where the tensor's pointers are
// aligned (element by element otherwise, and for the last few).
__global__ void step_float4(int64_t count, bool vec, float* p, const float* g, float* m, float* v,
                            Step s) {
  const int64_t e0 = 4 * (blockIdx.x * int64_t(blockDim.x) + threadIdx.x);
  if (e0 >= count) return;
  if (vec && e0 + 4 <= count) {
    float4 p4 = *reinterpret_cast<const float4*>(p + e0);
    const float4 g4 = *reinterpret_cast<const float4*>(g + e0);
    float4 m4 = *reinterpret_cast<const float4*>(m + e0);
    float4 v4 = s.adam ? *reinterpret_cast<const float4*>(v + e0) : float4{0.f, 0.f, 0.f, 0.f};
    update(p4.x, g4.x, m4.x, v4.x, s);
    update(p4.y, g4.y, m4.y, v4.y, s);
    update(p4.z, g4.z, m4.z, v4.z, s);
    update(p4.w, g4.w, m4.w, v4.w, s);
    *reinterpret_cast<float4*>(p + e0) = p4;
    *reinterpret_cast<float4*>(m + e0) = m4;
    if (s.adam) *reinterpret_cast<float4*>(v + e0) = v4;
    return;
  }
  for (int64_t e = e0; e < e0 + 4 && e < count; ++e) {
    float pi = p[e], mi = m[e], vi = s.adam ? v[e] : 0.f;
    update(pi, g[e], mi, vi, s);
    p[e] = pi;
    m[e] = mi;
    if (s.adam) v[e] = vi;
  }
}

// One table of tensors in four device arrays (param, grad, m, v), each tensor at its own offset:
// most 16-byte aligned, a few not (the element-by-element paths), some counts not a multiple of 4.
struct Problem {
  bool adam;
  int64_t total = 0;  // before offsets, whose initialiser sets it
  std::vector<int64_t> counts, offsets;
  ladder::DeviceArray<float> p, g, m, v;
  std::vector<float> p0, g0, m0, v0;  // the state before a step
  std::vector<float> want_p, want_m, want_v;
  AdamWConfig cfg{1e-3f, 0.9f, 0.999f, 1e-8f, 7};
  float lr = 0.05f, momentum = 0.9f;
  std::vector<Step> steps;  // per tensor, for the per-tensor versions

  static std::vector<int64_t> layout(const std::vector<int64_t>& counts, int64_t* total) {
    std::vector<int64_t> at;
    int64_t next = 0;
    for (size_t t = 0; t < counts.size(); ++t) {
      at.push_back(next + (t % 7 == 3 ? 1 : 0));  // every seventh tensor starts unaligned
      next = (at.back() + counts[t] + 3) / 4 * 4;
    }
    *total = next;
    return at;
  }

  Problem(bool is_adam, const std::vector<int64_t>& sizes, uint32_t seed)
      : adam(is_adam),
        counts(sizes),
        offsets(layout(sizes, &total)),
        p(size_t(total)),
        g(size_t(total)),
        m(size_t(total)),
        v(size_t(total)) {
    p0 = ladder::random_floats(size_t(total), seed);
    g0 = ladder::random_floats(size_t(total), seed + 1);
    m0 = ladder::random_floats(size_t(total), seed + 2, -0.1f, 0.1f);
    v0 = ladder::random_floats(size_t(total), seed + 3, 0.f, 0.01f);  // second moments are >= 0
    want_p = p0;
    want_m = m0;
    want_v = v0;
    std::vector<ParamRef> refs = table(want_p.data(), g0.data(), want_m.data(), want_v.data());
    if (adam)
      cpu::adamw(refs.data(), int(refs.size()), cfg);
    else
      cpu::sgd_momentum(refs.data(), int(refs.size()), lr, momentum);
    for (const ParamRef& r : refs) steps.push_back(step_of(r));
  }
  // The ParamRefs over four arrays laid out like the device ones. Weight decay on the larger
  // tensors (the kernels), none on the small ones (the biases); the smallest train at a tenth of
  // the rate (lr_scale), as a fine-tuned backbone's do.
  std::vector<ParamRef> table(float* pp, const float* gp, float* mp, float* vp) const {
    std::vector<ParamRef> refs;
    for (size_t t = 0; t < counts.size(); ++t) {
      const int64_t o = offsets[t];
      const bool kernel = counts[t] > 2000;
      refs.push_back({pp + o, gp + o, mp + o, adam ? vp + o : nullptr, counts[t],
                      kernel ? 0.01f : 0.f, t % 2 ? 0.1f : 1.f});
    }
    return refs;
  }
  // A tensor's step constants, as the CUDA entry points compute them.
  Step step_of(const ParamRef& r) const {
    Step s{};
    s.adam = adam;
    if (adam) {
      const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(cfg.step));
      const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(cfg.step));
      const float lr_t = cfg.lr * r.lr_scale;
      s.coef = 1.0f - lr_t * r.weight_decay;
      s.rate = float(lr_t / bc1);
      s.b1 = cfg.beta1;
      s.b2 = cfg.beta2;
      s.eps = cfg.eps;
      s.inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
    } else {
      s.coef = r.weight_decay;
      s.rate = lr * r.lr_scale;
      s.mom = momentum;
    }
    return s;
  }
  std::string shape() const {
    return std::to_string(counts.size()) + " tensors, " + std::to_string(total) + " floats";
  }
  double bytes() const { return double(adam ? 28 : 20) * double(total); }
  void poison() const {  // the updates are in place: each checked run starts from the same state
    p.upload(p0);
    g.upload(g0);
    m.upload(m0);
    v.upload(v0);
  }
  double error() const {
    double e =
        std::max(ladder::max_error(p.download(), want_p), ladder::max_error(m.download(), want_m));
    return adam ? std::max(e, ladder::max_error(v.download(), want_v)) : e;
  }
};

bool aligned(const float* q) {
  return (reinterpret_cast<uintptr_t>(q) & 15u) == 0;
}

std::vector<ladder::Version<Problem>> versions() {
  return {
      {"a launch a tensor, a thread an element",
       [](const Problem& pr) {
         for (size_t t = 0; t < pr.counts.size(); ++t) {
           const int64_t o = pr.offsets[t], n = pr.counts[t];
           GRAFT_LAUNCH(unsigned(cuda::ceil_div(n, 256)), dim3(256), 0, nullptr, step_elements)
           (n, pr.p.p + o, pr.g.p + o, pr.m.p + o, pr.v.p + o, pr.steps[t]);
           CUDA_CHECK_LAUNCH("step_elements", pr.shape());
         }
       }},
      {"a launch a tensor, a thread a float4 where aligned",
       [](const Problem& pr) {
         for (size_t t = 0; t < pr.counts.size(); ++t) {
           const int64_t o = pr.offsets[t], n = pr.counts[t];
           const bool vec = aligned(pr.p.p + o);  // the four arrays share their offsets
           GRAFT_LAUNCH(unsigned(cuda::ceil_div(n, 4 * 256)), dim3(256), 0, nullptr, step_float4)
           (n, vec, pr.p.p + o, pr.g.p + o, pr.m.p + o, pr.v.p + o, pr.steps[t]);
           CUDA_CHECK_LAUNCH("step_float4", pr.shape());
         }
       }},
      {"one launch for the whole table, binary search in constant memory (today's)",
       [](const Problem& pr) {
         const std::vector<ParamRef> refs = pr.table(pr.p.p, pr.g.p, pr.m.p, pr.v.p);
         if (pr.adam)
           cuda::adamw(refs.data(), int(refs.size()), pr.cfg, nullptr);
         else
           cuda::sgd_momentum(refs.data(), int(refs.size()), pr.lr, pr.momentum, nullptr);
       }},
  };
}

// A network's table: `pairs` kernels of log-uniform sizes between 100 and 600K floats, each with
// a bias of 16 to 1280 floats, scaled down by `shrink` (at least one element each).
std::vector<int64_t> network_sizes(int pairs, int64_t shrink, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> logsize(std::log(100.0), std::log(600000.0));
  std::uniform_int_distribution<int> bias(16, 1280);
  std::vector<int64_t> sizes;
  for (int i = 0; i < pairs; ++i) {
    sizes.push_back(std::max<int64_t>(1, int64_t(std::exp(logsize(rng))) / shrink));
    sizes.push_back(std::max<int64_t>(1, bias(rng) / shrink));
  }
  return sizes;
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_optimizer";
  try {
    if (!ladder::have_device(name)) return 0;
    // About EfficientNet-Lite0 fine-tuned end to end (65 convs and their biases, ~4M parameters);
    // emulated, the same table 64 times smaller. Checked also: three tensors of 1, 5 and 7 floats.
    const std::vector<int64_t> sizes = network_sizes(65, ladder::kEmulated ? 64 : 1, 11);
    int failed = 0;
    for (bool adam : {true, false}) {
      const Problem timed(adam, sizes, 1), tiny(adam, {1, 5, 7}, 2);
      failed |= ladder::run<Problem>(adam ? "ladder_optimizer (AdamW)" : "ladder_optimizer (SGD)",
                                     versions(), 1e-6, timed, {&tiny}, argc, argv);
    }
    return failed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
