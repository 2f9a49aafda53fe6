#pragma once
// The paths behind graft::cuda::conv2d_backward_data / conv2d_backward_filter / bias_grad,
// declared for the dispatcher, the tests (each path on its own against the CPU twin) and the
// benchmark. Plain C++: safe to include from host-only translation units.
//
// Determinism: no kernel here uses atomics. A reduction over pixels runs as `splits` fixed chunks,
// each summed in ascending order into its own partial buffer (in the caller's workspace), then
// sum_partials adds the partials in chunk order. Split counts depend on the shape only, so a run
// repeats bitwise on one device and the summation order is the same on every device.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/ops.h"

namespace graft::cuda {

// out[i] = sum over s in [0, splits) of partials[s * count + i], in that order (one thread per
// element). Shared by the filter-gradient paths and bias_grad.
void sum_partials(int splits, int64_t count, const float* partials, float* out, cudaStream_t stream,
                  const char* name, const std::string& detail);

// Throws std::invalid_argument when workspace_bytes < need (naming the op and both sizes), or when
// a non-zero need comes with a null workspace.
void check_workspace(const char* op, size_t need, const void* workspace, size_t workspace_bytes,
                     const std::string& detail);

// Every path starts here: validates the shape (std::invalid_argument naming `op`) and returns
// true when there is work; for an empty output (no output pixels or channels) it zero-fills dx
// (every input pixel's gradient is 0) or dw (a sum over nothing) on the stream and returns false.
bool conv_bwd_data_begin(const ConvShape& s, const char* op, float* dx, cudaStream_t stream);
bool conv_bwd_filter_begin(const ConvShape& s, const char* op, float* dw, cudaStream_t stream);

// ---- Pointwise (1x1, stride 1, unpadded, groups 1), on gemm.cuh's tile kernel -----------------
// dx[P][in_c] = dy[P][out_c] . w[in_c][out_c]^T   (P = n*h*w pixels)
void conv_bwd_data_pointwise(const ConvShape& s, const float* dy, const float* w, float* dx,
                             cudaStream_t stream);
// dw[in_c][out_c] = x[P][in_c]^T . dy[P][out_c], split over P into fixed chunks (split-K).
// v1: gemm.cuh's tiles (128x128 .. 64x64) over (in_c, out_c), one chunk per blockIdx.z.
// v2: for narrow layers (in_c or out_c <= 64), whose dw is smaller than one of those tiles (the
//     112x112 layer's 32 x 16 would use 1/8 of a 128x32 tile): tiles of 16/32/64 x 16/32/64 sized
//     to the layer, the block's 256 threads split into groups that take every G-th pixel of each
//     16-pixel step, the groups' sums added in group order at the end.
// conv_bwd_filter_pointwise: v2 when in_c <= 64 or out_c <= 64, else v1 (a rule on the shape, so
// the summation order never depends on the device).
size_t conv_bwd_filter_pointwise_v1_workspace(const ConvShape& s);
void conv_bwd_filter_pointwise_v1(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream);
size_t conv_bwd_filter_pointwise_v2_workspace(const ConvShape& s);
void conv_bwd_filter_pointwise_v2(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream);
size_t conv_bwd_filter_pointwise_workspace(const ConvShape& s);
void conv_bwd_filter_pointwise(const ConvShape& s, const float* x, const float* dy, float* dw,
                               void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ---- Depthwise (groups == in_c == out_c) ------------------------------------------------------
// dx v1: one thread per dx element, gathering from the outputs that read it (any shape).
void conv_bwd_data_depthwise_v1(const ConvShape& s, const float* dy, const float* w, float* dx,
                                cudaStream_t stream);
// dx v2: a thread per (float4 of channels, 4 neighbouring input pixels of a row), weights in
// shared memory; needs c % 4 == 0, 16-byte aligned pointers and k_w <= 7, else falls back to v1.
void conv_bwd_data_depthwise_v2(const ConvShape& s, const float* dy, const float* w, float* dx,
                                cudaStream_t stream);
// dw v1: one thread per weight, summing every output pixel in order. No workspace; a few hundred
// to a few thousand threads each walking n*out_h*out_w pixels: the plain baseline.
void conv_bwd_filter_depthwise_v1(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  cudaStream_t stream);
// dw v2: blocks over (chunk of output rows, channel quads), every tap's float4 accumulator in
// registers, a fixed tree over the block's threads, per-chunk partials, then sum_partials.
// Needs c % 4 == 0, 16-byte aligned pointers and (k_h, k_w) in {3x3, 5x5}; else v1.
size_t conv_bwd_filter_depthwise_v2_workspace(const ConvShape& s);
void conv_bwd_filter_depthwise_v2(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ---- Any shape (grouped, strided, KxK) ------------------------------------------------------
// dx: one thread per dx element gathering over (ky, kx, output channels of its group).
void conv_bwd_data_generic(const ConvShape& s, const float* dy, const float* w, float* dx,
                           cudaStream_t stream);
// dw v1: one thread per (weight, chunk of output pixels), then sum_partials.
size_t conv_bwd_filter_generic_workspace(const ConvShape& s);
void conv_bwd_filter_generic(const ConvShape& s, const float* x, const float* dy, float* dw,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream);
// dw v2 for groups == 1 KxK convs (the stem, ResNet's 3x3s): an implicit GEMM
// dw[(ky,kx,ci)][co] = sum_p im2col(x)[p][(ky,kx,ci)] * dy[p][co] on conv_backward_tiles.cuh's
// tiles (16/32/64 per side, sized to the filter), the pixel axis split into fixed chunks
// (blockIdx.z), then sum_partials.
size_t conv_bwd_filter_igemm_workspace(const ConvShape& s);
void conv_bwd_filter_igemm(const ConvShape& s, const float* x, const float* dy, float* dw,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Which path the dispatcher takes for a shape (for the benchmark's labels): "pointwise",
// "depthwise", "igemm" or "generic".
std::string conv_bwd_data_path(const ConvShape& s);
std::string conv_bwd_filter_path(const ConvShape& s);

// ---- bias_grad versions -----------------------------------------------------------------------
// v1: one thread per column, every row in order (no workspace; the plain baseline).
void bias_grad_v1(int64_t rows, int c, const float* dy, float* db, cudaStream_t stream);
// v2: rows split into fixed chunks, a block per (chunk, column slice) with a fixed tree inside,
// per-chunk partials, then sum_partials. What bias_grad uses.
size_t bias_grad_v2_workspace(int64_t rows, int c);
void bias_grad_v2(int64_t rows, int c, const float* dy, float* db, void* workspace,
                  size_t workspace_bytes, cudaStream_t stream);

}  // namespace graft::cuda
