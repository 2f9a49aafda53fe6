// conv2d: shape checks, the dispatch between the four paths, and the general path.
//   pointwise (1x1, stride 1, unpadded, one group)  -> conv_pointwise_v2 (conv_pointwise.cu)
//   depthwise (groups == in_c == out_c > 1)         -> conv_depthwise (conv_depthwise.cu)
//   1-4 input channels, one group (the image stems: EfficientNet's 3x3 s2, ResNet's 7x7 s2),
//   out_c % 8 == 0                                  -> conv_small_cin (conv_small_cin.cu)
//   everything else (ResNet 3x3, grouped, strided 1x1, depthwise with a channel multiplier)
//                                                   -> conv_implicit_gemm (below)
// The first two mirror the CPU twin's dispatch; the CPU runs the stems through its general
// (im2col) path, which the GPU's implicit GEMM also covers (the benchmark's "[igemm]" rows).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_internal.cuh"
#include "kernels/cuda/gemm.cuh"

namespace graft::cuda {

bool check_conv_shape(const ConvShape& s, const char* op) {
  if (s.n < 0 || s.in_h < 0 || s.in_w < 0 || s.in_c < 0 || s.out_h < 0 || s.out_w < 0 ||
      s.out_c < 0 || s.k_h <= 0 || s.k_w <= 0 || s.stride_h <= 0 || s.stride_w <= 0 ||
      s.pad_top < 0 || s.pad_left < 0 || s.groups <= 0)
    invalid(op, "bad shape: " + conv_shape_str(s));
  if (s.n == 0 || s.out_h == 0 || s.out_w == 0 || s.out_c == 0) return false;
  if (s.in_h == 0 || s.in_w == 0 || s.in_c == 0)
    invalid(op, "empty input for a non-empty output: " + conv_shape_str(s));
  if (s.in_c % s.groups != 0 || s.out_c % s.groups != 0)
    invalid(op, "groups must divide in_c and out_c: " + conv_shape_str(s));
  // Offsets inside the kernels are 32-bit per image row/pixel; keep whole tensors under 2^31.
  const int64_t x_elems = int64_t(s.n) * s.in_h * s.in_w * s.in_c;
  const int64_t y_elems = int64_t(s.n) * s.out_h * s.out_w * s.out_c;
  const int64_t k_elems = int64_t(s.k_h) * s.k_w * (s.in_c / s.groups);
  if (x_elems >= (int64_t(1) << 31) || y_elems >= (int64_t(1) << 31) ||
      k_elems >= (int64_t(1) << 31))
    invalid(op, "tensor too large (>= 2^31 elements): " + conv_shape_str(s));
  return true;
}

void conv_implicit_gemm(const ConvShape& s, const float* x, const float* w, const float* bias,
                        const float* residual, Act act, float* y, cudaStream_t stream) {
  if (!check_conv_shape(s, "conv_implicit_gemm")) return;
  const int cin_g = s.in_c / s.groups, cout_g = s.out_c / s.groups;
  GemmArgs p{};
  p.M = s.n * s.out_h * s.out_w;
  p.N = cout_g;
  p.K = s.k_h * s.k_w * cin_g;
  p.A = x;
  p.lda = 0;
  p.B = w;
  p.ldb = s.out_c;
  p.C = y;
  p.ldc = s.out_c;
  p.bias = bias;
  p.residual = residual;
  p.act = static_cast<int>(act);
  p.a_goff = cin_g;
  p.b_goff = cout_g;
  p.c_goff = cout_g;
  p.conv = ConvGeom{s.in_h,     s.in_w,     s.in_c,    s.out_h,    s.out_w, s.k_w,
                    s.stride_h, s.stride_w, s.pad_top, s.pad_left, cin_g};
  // float4 along K needs whole 4-channel runs inside one tap of one group; float4 along N needs
  // 4-aligned group column blocks.
  const bool vec = mult4(cin_g) && mult4(s.in_c) && mult4(cout_g) && mult4(s.out_c) &&
                   aligned16(x) && aligned16(w) && aligned16(y) && (!bias || aligned16(bias)) &&
                   (!residual || aligned16(residual));
  launch_gemm<kA_CONV, kB_KN>(p, s.groups, vec, pick_gemm_tile(p.M, p.N, s.groups), stream,
                              "conv_implicit_gemm", conv_shape_str(s));
}

void conv2d(const ConvShape& s, const float* x, const float* w, const float* bias,
            const float* residual, Act act, float* y, cudaStream_t stream) {
  if (!check_conv_shape(s, "conv2d")) return;
  if (s.k_h == 1 && s.k_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
      s.pad_left == 0 && s.groups == 1 && s.in_h == s.out_h && s.in_w == s.out_w) {
    conv_pointwise_v2(s, x, w, bias, residual, act, y, stream);
  } else if (s.groups == s.in_c && s.groups == s.out_c && s.groups > 1) {
    conv_depthwise(s, x, w, bias, residual, act, y, stream);
  } else if (conv_small_cin_fits(s, x, w, bias, residual, y)) {
    conv_small_cin(s, x, w, bias, residual, act, y, stream);
  } else {
    conv_implicit_gemm(s, x, w, bias, residual, act, y, stream);
  }
}

}  // namespace graft::cuda
