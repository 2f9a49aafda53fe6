// conv2d_backward_data / conv2d_backward_filter: shape checks, the dispatch between the paths, and
// the generic path that covers every shape.
//   pointwise (1x1, stride 1, unpadded, one group)  -> conv_backward_pointwise.cu (tiled GEMMs)
//   depthwise (groups == in_c == out_c > 1)         -> conv_backward_depthwise.cu
//   groups 1, any kernel / stride / padding         -> dx: generic gather (below)
//                                                      dw: conv_bwd_filter_igemm
//                                                      (conv_backward_igemm.cu)
//   anything else (grouped, depthwise multiplier)   -> the generic kernels below
//
// The generic kernels are the plain versions: one thread per output element gathering everything
// it needs from global memory. They are the readable statement of the math and the fallback; the
// specialised paths are checked against the CPU twins the same way (tests/test_cuda_backward.cpp).
//
//   dx[b][iy][ix][ci] = sum over (ky, kx) with oy = (iy + pad_top - ky) / stride_h integral and in
//                       range (likewise x), and over the output channels co of ci's group, of
//                       dy[b][oy][ox][co] * w[ky][kx][ci - group start][co]
//   dw[ky][kx][cil][co] = sum over (b, oy, ox) of dy[b][oy][ox][co] *
//                         x[b][oy*sh - pt + ky][ox*sw - pl + kx][g*cin_g + cil]
//                         (g = co's group; taps outside the image read zero)
//
// Written without a GPU at hand: compiled for sm_75 and sm_90, not yet run. Unverified until the
// tests have run on a GPU.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_backward_internal.cuh"
#include "kernels/cuda/conv_internal.cuh"

namespace graft::cuda {
namespace {

struct BwdArgs {
  int n, in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, stride_h, stride_w, pad_top, pad_left;
  int cin_g, cout_g;
};

BwdArgs bwd_args(const ConvShape& s) {
  return BwdArgs{s.n,
                 s.in_h,
                 s.in_w,
                 s.in_c,
                 s.out_h,
                 s.out_w,
                 s.out_c,
                 s.k_h,
                 s.k_w,
                 s.stride_h,
                 s.stride_w,
                 s.pad_top,
                 s.pad_left,
                 s.in_c / s.groups,
                 s.out_c / s.groups};
}

__global__ void conv_bwd_data_generic_kernel(const BwdArgs a, const float* __restrict__ dy,
                                             const float* __restrict__ w, float* __restrict__ dx) {
  const int64_t total = static_cast<int64_t>(a.n) * a.in_h * a.in_w * a.in_c;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ci = static_cast<int>(i % a.in_c);
    const int64_t pix = i / a.in_c;
    const int ix = static_cast<int>(pix % a.in_w);
    const int64_t row = pix / a.in_w;
    const int iy = static_cast<int>(row % a.in_h);
    const int b = static_cast<int>(row / a.in_h);
    const int g = ci / a.cin_g, cil = ci - g * a.cin_g;
    const int co0 = g * a.cout_g;
    float acc = 0.f;
    for (int ky = 0; ky < a.k_h; ++ky) {
      const int ty = iy + a.pad_top - ky;
      if (ty < 0 || ty % a.stride_h != 0) continue;
      const int oy = ty / a.stride_h;
      if (oy >= a.out_h) continue;
      for (int kx = 0; kx < a.k_w; ++kx) {
        const int tx = ix + a.pad_left - kx;
        if (tx < 0 || tx % a.stride_w != 0) continue;
        const int ox = tx / a.stride_w;
        if (ox >= a.out_w) continue;
        const float* d =
            dy + ((static_cast<int64_t>(b) * a.out_h + oy) * a.out_w + ox) * a.out_c + co0;
        const float* wr =
            w + (static_cast<int64_t>(ky * a.k_w + kx) * a.cin_g + cil) * a.out_c + co0;
        for (int co = 0; co < a.cout_g; ++co) acc = fmaf(d[co], __ldg(wr + co), acc);
      }
    }
    dx[i] = acc;
  }
}

// Thread per (weight, split): weight index fastest, so a warp reads 32 consecutive co of one dy
// pixel (coalesced) and one x value (a broadcast). Each sums its split's pixels in order.
__global__ void conv_bwd_filter_generic_kernel(const BwdArgs a, int64_t wcount, int64_t chunk,
                                               const float* __restrict__ x,
                                               const float* __restrict__ dy,
                                               float* __restrict__ out) {
  const int64_t pixels = static_cast<int64_t>(a.n) * a.out_h * a.out_w;
  const int64_t wi = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (wi >= wcount) return;
  const int co = static_cast<int>(wi % a.out_c);
  const int64_t rest = wi / a.out_c;
  const int cil = static_cast<int>(rest % a.cin_g);
  const int tap = static_cast<int>(rest / a.cin_g);
  const int ky = tap / a.k_w, kx = tap - ky * a.k_w;
  const int ci = (co / a.cout_g) * a.cin_g + cil;
  const int64_t p0 = blockIdx.y * chunk, p1 = min(pixels, p0 + chunk);
  float acc = 0.f;
  if (p0 < p1) {
    int ox = static_cast<int>(p0 % a.out_w);
    int oy = static_cast<int>((p0 / a.out_w) % a.out_h);
    int b = static_cast<int>(p0 / (static_cast<int64_t>(a.out_w) * a.out_h));
    for (int64_t p = p0; p < p1; ++p) {
      const int iy = oy * a.stride_h - a.pad_top + ky, ix = ox * a.stride_w - a.pad_left + kx;
      if (iy >= 0 && iy < a.in_h && ix >= 0 && ix < a.in_w)
        acc = fmaf(x[((static_cast<int64_t>(b) * a.in_h + iy) * a.in_w + ix) * a.in_c + ci],
                   dy[p * a.out_c + co], acc);
      if (++ox == a.out_w) {
        ox = 0;
        if (++oy == a.out_h) oy = 0, ++b;
      }
    }
  }
  out[blockIdx.y * wcount + wi] = acc;
}

// Splits for the generic dw: about 256K threads in all, at most 1024 splits and at least 64
// pixels per split. Shape only.
int64_t generic_splits(const ConvShape& s) {
  const int64_t pixels = int64_t(s.n) * s.out_h * s.out_w;
  const int64_t wcount = int64_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
  int64_t splits = std::clamp<int64_t>(ceil_div(262144, wcount), 1, 1024);
  splits = std::min(splits, std::max<int64_t>(1, pixels / 64));
  return ceil_div(pixels, ceil_div(pixels, splits));  // no empty trailing split
}

bool is_pointwise(const ConvShape& s) {
  return s.k_h == 1 && s.k_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
         s.pad_left == 0 && s.groups == 1 && s.in_h == s.out_h && s.in_w == s.out_w;
}

bool is_depthwise(const ConvShape& s) {
  return s.groups == s.in_c && s.groups == s.out_c && s.groups > 1;
}

size_t x_bytes(const ConvShape& s) {
  return sizeof(float) * size_t(s.n) * s.in_h * s.in_w * s.in_c;
}
size_t w_bytes(const ConvShape& s) {
  return sizeof(float) * size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
}

}  // namespace

bool conv_bwd_data_begin(const ConvShape& s, const char* op, float* dx, cudaStream_t stream) {
  if (check_conv_shape(s, op)) return true;
  if (x_bytes(s)) CUDA_CHECK(cudaMemsetAsync(dx, 0, x_bytes(s), stream));
  return false;
}

bool conv_bwd_filter_begin(const ConvShape& s, const char* op, float* dw, cudaStream_t stream) {
  if (check_conv_shape(s, op)) return true;
  if (w_bytes(s)) CUDA_CHECK(cudaMemsetAsync(dw, 0, w_bytes(s), stream));
  return false;
}

void conv_bwd_data_generic(const ConvShape& s, const float* dy, const float* w, float* dx,
                           cudaStream_t stream) {
  if (!conv_bwd_data_begin(s, "conv_bwd_data_generic", dx, stream)) return;
  const int64_t total = int64_t(s.n) * s.in_h * s.in_w * s.in_c;
  GRAFT_LAUNCH(grid_for(total, 256), 256, 0, stream, conv_bwd_data_generic_kernel)
  (bwd_args(s), dy, w, dx);
  CUDA_CHECK_LAUNCH("conv_bwd_data_generic_kernel", conv_shape_str(s));
}

size_t conv_bwd_filter_generic_workspace(const ConvShape& s) {
  if (s.n <= 0 || s.out_h <= 0 || s.out_w <= 0 || s.groups <= 0) return 0;
  const int64_t splits = generic_splits(s);
  return splits > 1 ? size_t(splits) * w_bytes(s) : 0;
}

void conv_bwd_filter_generic(const ConvShape& s, const float* x, const float* dy, float* dw,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const std::string detail = conv_shape_str(s);
  if (!conv_bwd_filter_begin(s, "conv_bwd_filter_generic", dw, stream)) return;
  check_workspace("conv2d_backward_filter", conv_bwd_filter_generic_workspace(s), workspace,
                  workspace_bytes, detail);
  const int64_t pixels = int64_t(s.n) * s.out_h * s.out_w;
  const int64_t splits = generic_splits(s);
  const int64_t chunk = ceil_div(pixels, splits);
  const int64_t wcount = int64_t(w_bytes(s) / sizeof(float));
  float* out = splits > 1 ? static_cast<float*>(workspace) : dw;
  const dim3 grid(static_cast<unsigned>(ceil_div(wcount, 256)), static_cast<unsigned>(splits));
  GRAFT_LAUNCH(grid, 256, 0, stream, conv_bwd_filter_generic_kernel)
  (bwd_args(s), wcount, chunk, x, dy, out);
  CUDA_CHECK_LAUNCH("conv_bwd_filter_generic_kernel", detail);
  if (splits > 1) sum_partials(int(splits), wcount, out, dw, stream, "conv_bwd_filter_sum", detail);
}

std::string conv_bwd_data_path(const ConvShape& s) {
  if (is_pointwise(s)) return "pointwise";
  if (is_depthwise(s)) return "depthwise";
  return "generic";
}

std::string conv_bwd_filter_path(const ConvShape& s) {
  if (is_pointwise(s)) return "pointwise";
  if (is_depthwise(s)) return "depthwise";
  if (s.groups == 1) return "igemm";
  return "generic";
}

void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx,
                          cudaStream_t stream) {
  if (!conv_bwd_data_begin(s, "conv2d_backward_data", dx, stream)) return;
  if (is_pointwise(s)) return conv_bwd_data_pointwise(s, dy, w, dx, stream);
  if (is_depthwise(s)) return conv_bwd_data_depthwise_v2(s, dy, w, dx, stream);
  conv_bwd_data_generic(s, dy, w, dx, stream);
}

size_t conv2d_backward_filter_workspace(const ConvShape& s) {
  if (s.n <= 0 || s.out_h <= 0 || s.out_w <= 0 || s.groups <= 0) return 0;
  if (is_pointwise(s)) return conv_bwd_filter_pointwise_workspace(s);
  if (is_depthwise(s)) return conv_bwd_filter_depthwise_v2_workspace(s);
  if (s.groups == 1) return conv_bwd_filter_igemm_workspace(s);
  return conv_bwd_filter_generic_workspace(s);
}

void conv2d_backward_filter(const ConvShape& s, const float* x, const float* dy, float* dw,
                            void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!conv_bwd_filter_begin(s, "conv2d_backward_filter", dw, stream)) return;
  if (is_pointwise(s))
    return conv_bwd_filter_pointwise(s, x, dy, dw, workspace, workspace_bytes, stream);
  if (is_depthwise(s))
    return conv_bwd_filter_depthwise_v2(s, x, dy, dw, workspace, workspace_bytes, stream);
  if (s.groups == 1) return conv_bwd_filter_igemm(s, x, dy, dw, workspace, workspace_bytes, stream);
  conv_bwd_filter_generic(s, x, dy, dw, workspace, workspace_bytes, stream);
}

}  // namespace graft::cuda
