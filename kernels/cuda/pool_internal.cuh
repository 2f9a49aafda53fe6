#pragma once
// The global average pooling versions behind graft::cuda::global_avg_pool, declared for the tests
// (which check each version against the CPU twin) and the benchmark. Plain C++: safe to include
// from host-only translation units.
#include "kernels/ops.h"

namespace graft::cuda {

// v1: a thread per (image, float4 of channels) walks the pixels with plain loads; one channel per
// thread when c % 4 != 0 or a pointer is not 16-byte aligned. The readable baseline, and
// global_avg_pool's path for those shapes.
void global_avg_pool_v1(int n, int hw, int c, const float* x, float* y, cudaStream_t stream);

// v2 (global_avg_pool's path for c % 4 == 0 and aligned tensors) stages each thread's pixels in a
// ring of `stages` slots of `batch` pixels in shared memory with cp.async, so many loads are in
// flight per thread. Rings: 4x4 (global_avg_pool's), 8x2, 2x8, 8x4; others throw, as do c % 4 != 0
// and unaligned tensors. Same order of adds as v1 and the CPU twin.
void global_avg_pool_v2(int n, int hw, int c, const float* x, float* y, cudaStream_t stream,
                        int batch, int stages);

}  // namespace graft::cuda
