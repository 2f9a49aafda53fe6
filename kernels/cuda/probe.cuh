#pragma once
// A measuring kernel for the benchmarks, not an op: the card's fp32 FMA ceiling. Plain C++
// declaration, so host-only benchmark files can call it.
#include "kernels/ops.h"

namespace graft::cuda {

// blocks x threads threads, each running `iters` x 32 FMAs in 8 independent chains, writing one
// float per thread to out (so the work is not optimised away). FLOPs = 2 * 32 * iters * threads.
void fma_peak_probe(int blocks, int threads, int iters, float* out, cudaStream_t stream);

}  // namespace graft::cuda
