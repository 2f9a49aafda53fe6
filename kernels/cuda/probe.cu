// See probe.cuh. Eight independent FMA chains per thread cover the FMA pipeline's latency with a
// full SM of warps; no loads or stores inside the loop.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/probe.cuh"

namespace graft::cuda {
namespace {

__global__ void fma_peak_kernel(int iters, float seed, float* out) {
  float a0 = seed + threadIdx.x, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5,
        a6 = a0 + 6, a7 = a0 + 7;
  const float m = 0.9999f, c = 0.0001f;
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      a0 = fmaf(a0, m, c), a1 = fmaf(a1, m, c), a2 = fmaf(a2, m, c), a3 = fmaf(a3, m, c);
      a4 = fmaf(a4, m, c), a5 = fmaf(a5, m, c), a6 = fmaf(a6, m, c), a7 = fmaf(a7, m, c);
    }
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

}  // namespace

void fma_peak_probe(int blocks, int threads, int iters, float* out, cudaStream_t stream) {
  if (blocks <= 0 || threads <= 0 || iters < 0) invalid("fma_peak_probe", "bad launch size");
  GRAFT_LAUNCH(blocks, threads, 0, stream, fma_peak_kernel)(iters, 1.f, out);
  CUDA_CHECK_LAUNCH("fma_peak_kernel", "blocks=" + std::to_string(blocks));
}

}  // namespace graft::cuda
