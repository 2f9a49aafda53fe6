#pragma once
// Launchers of the deliberately faulty kernels in tests/emulation_planted.cu. Each returns the
// error CUDA_CHECK_LAUNCH would see right after the launch (the emulation runs it at once).
#include <cuda_runtime.h>

#include <cstddef>

namespace graft::planted {

cudaError_t shifted_copy(int n, int shift, const float* x, float* y);
cudaError_t float4_sum(const float* x, int offset, float* y);
cudaError_t rotate(bool barrier, int blocks, int threads, const float* x, float* y);
cudaError_t stale_shared(int blocks, float* y);
cudaError_t dynamic_shared(int threads, int writes, size_t bytes, float* y);
cudaError_t warp_sum(unsigned mask, const float* x, float* y);
cudaError_t warp_ops(const float* x, unsigned* ballot, float* down, float* up, float* bcast);
cudaError_t early_exit_shuffle(int exit_below, float* y);
cudaError_t launch_with(dim3 grid, dim3 block, size_t shared_bytes, float* y);
cudaError_t constant_read(const float* host, size_t count, size_t offset, float* y);

}  // namespace graft::planted
