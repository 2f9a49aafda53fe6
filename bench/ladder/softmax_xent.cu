// The softmax cross-entropy ladder: per-row loss and dlogits of [n][c] logits, from one thread a
// row to today's kernel (kernels/cuda/softmax.cu), each version checked against the CPU twin
// (cpu::softmax_xent) and timed. bench/worklog-cuda-memory.md has the predictions and figures.
//
//   ladder_softmax_xent [VERSION]
//
// Every version computes the same centred form as the twin, from z - max:
//   loss = log(sum_j exp(z_j - m)) - (off * sum_j (z_j - m) + (on - off) * (z_label - m))
//   dlogits_j = grad_scale * (exp(z_j - m) / sum - (j == label ? on : off))
// with on = 1 - smoothing + smoothing/c and off = smoothing/c. It is memory-bound: the least a run
// must move is the logits read once and dlogits written once.
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

struct Xent {
  float off, on, grad_scale;
};

Xent xent_of(int c, float smoothing, float grad_scale) {
  const float off = smoothing / float(c);
  return {off, 1.f - smoothing + off, grad_scale};
}

// v1: one thread a row, three passes over the row in global memory (max; the sums; the
// gradients). Neighbouring threads read addresses c floats apart: no access is coalesced.
__global__ void xent_thread_per_row(int n, int c, const float* x, const int32_t* labels, Xent a,
                                    float* loss, float* d) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const float* z = x + int64_t(row) * c;
  float m = -INFINITY;
  for (int j = 0; j < c; ++j) m = fmaxf(m, z[j]);
  float sum = 0.f, zsum = 0.f;
  for (int j = 0; j < c; ++j) {
    sum += expf(z[j] - m);
    zsum += z[j] - m;
  }
  const int label = labels[row];
  const float zl = label >= 0 && label < c ? z[label] - m : NAN;
  loss[row] = logf(sum) - (a.off * zsum + (a.on - a.off) * zl);
  const float inv = 1.f / sum;
  for (int j = 0; j < c; ++j)
    d[int64_t(row) * c + j] = a.grad_scale * (expf(z[j] - m) * inv - (j == label ? a.on : a.off));
}

// v2: one block of 256 threads a row. Thread t reads elements t, t + 256, ...: each warp's loads
// are 128 contiguous bytes. The max and the sums are reduced through shared memory, a tree of
// halvings with a barrier at each level.
constexpr int kBlock = 256;

__device__ float block_reduce(float v, float* s, bool is_max) {
  const int t = threadIdx.x;
  s[t] = v;
  __syncthreads();
  for (int half = kBlock / 2; half > 0; half /= 2) {
    if (t < half) s[t] = is_max ? fmaxf(s[t], s[t + half]) : s[t] + s[t + half];
    __syncthreads();
  }
  const float r = s[0];
  __syncthreads();  // s is written again by the next reduction
  return r;
}

__global__ void xent_block_per_row(int c, const float* x, const int32_t* labels, Xent a,
                                   float* loss, float* d) {
  __shared__ float s[kBlock];
  const int row = blockIdx.x, t = threadIdx.x;
  const float* z = x + int64_t(row) * c;
  float m = -INFINITY;
  for (int j = t; j < c; j += kBlock) m = fmaxf(m, z[j]);
  m = block_reduce(m, s, true);
  float sum = 0.f, zsum = 0.f;
  for (int j = t; j < c; j += kBlock) {
    sum += expf(z[j] - m);
    zsum += z[j] - m;
  }
  sum = block_reduce(sum, s, false);
  zsum = block_reduce(zsum, s, false);
  const int label = labels[row];
  if (t == 0) {
    const float zl = label >= 0 && label < c ? z[label] - m : NAN;
    loss[row] = logf(sum) - (a.off * zsum + (a.on - a.off) * zl);
  }
  const float inv = 1.f / sum;
  for (int j = t; j < c; j += kBlock)
    d[int64_t(row) * c + j] = a.grad_scale * (expf(z[j] - m) * inv - (j == label ? a.on : a.off));
}

// v3: one warp a row, 8 rows a block. The reductions are butterflies of warp shuffles: no shared
// memory and no block barrier, and 8 rows in flight per block. The row is still read three times
// (the later passes mostly from L2).
constexpr int kRowsPerBlock = 8;

__device__ float warp_reduce(float v, bool is_max) {
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  return v;
}

__global__ void xent_warp_per_row(int n, int c, const float* x, const int32_t* labels, Xent a,
                                  float* loss, float* d) {
  const int lane = threadIdx.x & 31, row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= n) return;  // whole warps leave together: the shuffles stay full-warp
  const float* z = x + int64_t(row) * c;
  float m = -INFINITY;
  for (int j = lane; j < c; j += 32) m = fmaxf(m, z[j]);
  m = warp_reduce(m, true);
  float sum = 0.f, zsum = 0.f;
  for (int j = lane; j < c; j += 32) {
    sum += expf(z[j] - m);
    zsum += z[j] - m;
  }
  sum = warp_reduce(sum, false);
  zsum = warp_reduce(zsum, false);
  const int label = labels[row];
  if (lane == 0) {
    const float zl = label >= 0 && label < c ? z[label] - m : NAN;
    loss[row] = logf(sum) - (a.off * zsum + (a.on - a.off) * zl);
  }
  const float inv = 1.f / sum;
  for (int j = lane; j < c; j += 32)
    d[int64_t(row) * c + j] = a.grad_scale * (expf(z[j] - m) * inv - (j == label ? a.on : a.off));
}

// One shape: random logits and labels, the outputs, and the CPU twin's answer.
struct Problem {
  int n, c;
  float smoothing = 0.1f, grad_scale;
  ladder::DeviceArray<float> logits, loss, dlogits;
  ladder::DeviceArray<int32_t> labels;
  std::vector<float> want_loss, want_d;

  Problem(int rows, int classes, uint32_t seed)
      : n(rows),
        c(classes),
        grad_scale(1.f / float(rows)),
        logits(size_t(rows) * classes),
        loss(rows),
        dlogits(size_t(rows) * classes),
        labels(rows) {
    // Logits spread over [-8, 8]: exp spans six orders of magnitude, so the max subtraction and
    // the sums are exercised, not just a flat row.
    const std::vector<float> x = ladder::random_floats(size_t(n) * c, seed, -8.f, 8.f);
    std::vector<int32_t> y(n);
    for (int i = 0; i < n; ++i) y[i] = int32_t((i * 7919 + seed) % uint32_t(c));
    logits.upload(x);
    labels.upload(y);
    want_loss.assign(n, 0.f);
    want_d.assign(size_t(n) * c, 0.f);
    cpu::softmax_xent(n, c, x.data(), y.data(), smoothing, grad_scale, want_loss.data(),
                      want_d.data());
  }
  std::string shape() const { return std::to_string(n) + "x" + std::to_string(c); }
  double bytes() const { return 4.0 * (2.0 * n * c + 2.0 * n); }
  void poison() const {
    loss.poison();
    dlogits.poison();
  }
  double error() const {
    return std::max(ladder::max_error(loss.download(), want_loss),
                    ladder::max_error(dlogits.download(), want_d));
  }
  Xent xent() const { return xent_of(c, smoothing, grad_scale); }
};

std::vector<ladder::Version<Problem>> versions() {
  return {
      {"one thread a row, three passes over it, uncoalesced",
       [](const Problem& p) {
         GRAFT_LAUNCH(unsigned(cuda::ceil_div(p.n, 128)), dim3(128), 0, nullptr,
                      xent_thread_per_row)
         (p.n, p.c, p.logits.p, p.labels.p, p.xent(), p.loss.p, p.dlogits.p);
         CUDA_CHECK_LAUNCH("xent_thread_per_row", p.shape());
       }},
      {"one block a row: coalesced loads, reductions in shared memory",
       [](const Problem& p) {
         GRAFT_LAUNCH(unsigned(p.n), dim3(kBlock), 0, nullptr, xent_block_per_row)
         (p.c, p.logits.p, p.labels.p, p.xent(), p.loss.p, p.dlogits.p);
         CUDA_CHECK_LAUNCH("xent_block_per_row", p.shape());
       }},
      {"one warp a row, 8 a block: reductions by shuffles, no barriers",
       [](const Problem& p) {
         GRAFT_LAUNCH(unsigned(cuda::ceil_div(p.n, kRowsPerBlock)), dim3(32 * kRowsPerBlock), 0,
                      nullptr, xent_warp_per_row)
         (p.n, p.c, p.logits.p, p.labels.p, p.xent(), p.loss.p, p.dlogits.p);
         CUDA_CHECK_LAUNCH("xent_warp_per_row", p.shape());
       }},
      {"the row in registers, read once (today's cuda::softmax_xent)",
       [](const Problem& p) {
         cuda::softmax_xent(p.n, p.c, p.logits.p, p.labels.p, p.smoothing, p.grad_scale, p.loss.p,
                            p.dlogits.p, nullptr);
       }},
  };
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_softmax_xent";
  try {
    if (!ladder::have_device(name)) return 0;
    // ImageNet's 1000 classes over a batch that fills the card; emulated, a few rows of them.
    // Checked also: a row shorter than a warp and one longer than the registers hold (1000 < c).
    const Problem timed(ladder::kEmulated ? 64 : 65536, 1000, 1);
    const Problem short_rows(13, 10, 2), long_rows(5, 1500, 3);
    return ladder::run<Problem>(name, versions(), 1e-5, timed, {&short_rows, &long_rows}, argc,
                                argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
