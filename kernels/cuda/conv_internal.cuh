#pragma once
// The conv2d paths behind graft::cuda::conv2d's dispatch, declared for the dispatcher, the tests
// (which check each path on its own against the CPU twin) and the benchmark. Plain C++: safe to
// include from host-only translation units.
#include <string>

#include "kernels/ops.h"

namespace graft::cuda {

// 1x1, stride 1, no padding, groups 1, as the GEMM [n*h*w][in_c] x [in_c][out_c].
// v1: one output per thread, operands straight from global memory. The readable baseline.
void conv_pointwise_v1(const ConvShape& s, const float* x, const float* w, const float* bias,
                       const float* residual, Act act, float* y, cudaStream_t stream);
// v2: the register-blocked shared-memory GEMM of gemm.cuh (float4 loads, double-buffered tiles,
// 8x8 or 8x4 outputs per thread). What conv2d uses.
void conv_pointwise_v2(const ConvShape& s, const float* x, const float* w, const float* bias,
                       const float* residual, Act act, float* y, cudaStream_t stream);

// For the benchmark's tile sweep: the block tile conv_pointwise_v2 picks for a shape ("128x128",
// "128x64", "128x32" or "64x64"), and the same conv with a tile forced (std::invalid_argument for
// another name).
std::string conv_pointwise_v2_pick(const ConvShape& s);
void conv_pointwise_v2_tile(const ConvShape& s, const float* x, const float* w, const float* bias,
                            const float* residual, Act act, float* y, const std::string& tile,
                            cudaStream_t stream);

// groups == in_c == out_c, any kernel size, stride and padding.
void conv_depthwise(const ConvShape& s, const float* x, const float* w, const float* bias,
                    const float* residual, Act act, float* y, cudaStream_t stream);

// groups 1 with 1-4 input channels (the image stems): direct convolution, a thread per (output
// pixel, 8 output channels), all weights in shared memory. conv_small_cin_fits says whether a
// shape and its pointers qualify (out_c % 8 == 0, weights <= 48 KB, 16-byte aligned w, y, bias and
// residual); conv_small_cin throws std::invalid_argument when they do not.
bool conv_small_cin_fits(const ConvShape& s, const float* x, const float* w, const float* bias,
                         const float* residual, const float* y);
void conv_small_cin(const ConvShape& s, const float* x, const float* w, const float* bias,
                    const float* residual, Act act, float* y, cudaStream_t stream);

// Any shape (the fallback): implicit GEMM, im2col on the fly into shared memory.
void conv_implicit_gemm(const ConvShape& s, const float* x, const float* w, const float* bias,
                        const float* residual, Act act, float* y, cudaStream_t stream);

// Throws std::invalid_argument (naming the op and the shape) unless `s` is a valid convolution.
// Returns false when the output is empty (nothing to do).
bool check_conv_shape(const ConvShape& s, const char* op);

}  // namespace graft::cuda
