// Kernels written wrong on purpose, each beside its correct twin, for tests/test_emulation.cpp:
// every fault a GPU run (or compute-sanitizer) would report must be reported by the emulation too.
// Each launcher returns what CUDA_CHECK_LAUNCH would see after the launch.
#include "kernels/cuda/common.cuh"
#include "tests/emulation_planted.h"

namespace graft::planted {
namespace {

// Thread t copies x[t + shift] to y[t]: shift 1 reads one element past the end of x.
__global__ void shifted_copy_kernel(int n, int shift, const float* x, float* y) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < n) y[t] = x[t + shift];
}

// Sums four floats at x + offset through one float4 load: offset 1 is not 16-byte aligned.
__attribute__((no_sanitize("alignment"))) __global__ void float4_sum_kernel(const float* x,
                                                                            int offset, float* y) {
  const float4 v = *reinterpret_cast<const float4*>(x + offset);
  y[0] = v.x + v.y + v.z + v.w;
}

// Each thread writes its value to shared memory, then reads its neighbour's: without the barrier
// between, the read races with the neighbour's write.
__global__ void rotate_kernel(bool barrier, const float* x, float* y) {
  __shared__ float s[256];
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = x[blockIdx.x * n + t];
  if (barrier) __syncthreads();
  y[blockIdx.x * n + t] = s[(t + 1) % n];
}

// Reads shared memory that no thread of the block wrote (first_block_only: only block 0 writes).
__global__ void stale_shared_kernel(float* y) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  if (blockIdx.x == 0) s[t] = 1.f;
  __syncthreads();
  y[blockIdx.x * blockDim.x + t] = s[t];
}

// The same through dynamic shared memory, with `writes` leading elements written first.
__global__ void dynamic_shared_kernel(int writes, float* y) {
  GRAFT_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x;
  if (t < writes) s[t] = float(t);
  __syncthreads();
  y[t] = s[t];
}

// A warp sum by butterfly shuffles with the given mask (0xffffffff is right for a full warp).
__global__ void warp_sum_kernel(unsigned mask, const float* x, float* y) {
  float v = x[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(mask, v, o);
  y[threadIdx.x] = v;
}

// Ballot of x > 0, shuffle down and up by 3, and a broadcast of lane 5 over a full warp.
__global__ void warp_ops_kernel(const float* x, unsigned* ballot, float* down, float* up,
                                float* bcast) {
  const int l = threadIdx.x;
  const unsigned b = __ballot_sync(0xffffffffu, x[l] > 0.f);
  down[l] = __shfl_down_sync(0xffffffffu, x[l], 3);
  up[l] = __shfl_up_sync(0xffffffffu, x[l], 3);
  bcast[l] = __shfl_sync(0xffffffffu, x[l], 5);
  if (l == 0) *ballot = b;
}

// Lanes below `exit_below` return before the shuffle that names all 32 lanes.
__global__ void early_exit_shuffle_kernel(int exit_below, float* y) {
  if (int(threadIdx.x) < exit_below) return;
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, float(threadIdx.x), 1);
}

// Writes its thread's index: a kernel for launches that only test the configuration.
__global__ void index_kernel(float* y) {
  const unsigned b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  if (b == 0) y[t] = float(t);
}

__constant__ float c_table[16];

__global__ void constant_read_kernel(float* y) {
  y[threadIdx.x] = c_table[threadIdx.x];
}

cudaError_t finish() {
  return cudaGetLastError();
}

}  // namespace

cudaError_t shifted_copy(int n, int shift, const float* x, float* y) {
  GRAFT_LAUNCH(unsigned((n + 63) / 64), 64, 0, nullptr, shifted_copy_kernel)(n, shift, x, y);
  return finish();
}

cudaError_t float4_sum(const float* x, int offset, float* y) {
  GRAFT_LAUNCH(1, 1, 0, nullptr, float4_sum_kernel)(x, offset, y);
  return finish();
}

cudaError_t rotate(bool barrier, int blocks, int threads, const float* x, float* y) {
  GRAFT_LAUNCH(unsigned(blocks), unsigned(threads), 0, nullptr, rotate_kernel)(barrier, x, y);
  return finish();
}

cudaError_t stale_shared(int blocks, float* y) {
  GRAFT_LAUNCH(unsigned(blocks), 64, 0, nullptr, stale_shared_kernel)(y);
  return finish();
}

cudaError_t dynamic_shared(int threads, int writes, size_t bytes, float* y) {
  GRAFT_LAUNCH(1, unsigned(threads), bytes, nullptr, dynamic_shared_kernel)(writes, y);
  return finish();
}

cudaError_t warp_sum(unsigned mask, const float* x, float* y) {
  GRAFT_LAUNCH(1, 32, 0, nullptr, warp_sum_kernel)(mask, x, y);
  return finish();
}

cudaError_t warp_ops(const float* x, unsigned* ballot, float* down, float* up, float* bcast) {
  GRAFT_LAUNCH(1, 32, 0, nullptr, warp_ops_kernel)(x, ballot, down, up, bcast);
  return finish();
}

cudaError_t early_exit_shuffle(int exit_below, float* y) {
  GRAFT_LAUNCH(1, 32, 0, nullptr, early_exit_shuffle_kernel)(exit_below, y);
  return finish();
}

cudaError_t launch_with(dim3 grid, dim3 block, size_t shared_bytes, float* y) {
  GRAFT_LAUNCH(grid, block, shared_bytes, nullptr, index_kernel)(y);
  return finish();
}

cudaError_t constant_read(const float* host, size_t count, size_t offset, float* y) {
  const cudaError_t err =
      cudaMemcpyToSymbol(c_table, host, count * sizeof(float), offset * sizeof(float));
  if (err != cudaSuccess) return err;
  GRAFT_LAUNCH(1, 16, 0, nullptr, constant_read_kernel)(y);
  return finish();
}

}  // namespace graft::planted
