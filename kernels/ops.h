#pragma once
// Every op on graft's path, declared once. Two implementations share each declaration:
//   graft::cpu   kernels/cpu/*.cpp   the CPU twins and backend: C++ with OpenMP, vectorised for
//                                    each CPU path (kernels/cpu/cpu_path.h)
//   graft::cuda  kernels/cuda/*.cu   hand-written CUDA kernels; same arguments plus a stream,
//                                    pointers are device pointers unless a comment says host
// The reference both are tested against is graft::cpu::ref (kernels/cpu/reference.h): plain loops,
// accumulating in double where a sum is long.
//
// Conventions:
//   * activations are NHWC float32, contiguous;
//   * conv weights are HWIO: [k_h][k_w][in_c / groups][out_c]; out_c spans all groups and group g
//     owns outputs [g * out_c/groups, (g+1) * out_c/groups) and inputs likewise;
//   * linear weights are [out][in] (PyTorch's layout), biases [out];
//   * an output never aliases an input unless the comment says it may.
#include <cstddef>
#include <cstdint>
#include <string>

typedef struct CUstream_st* cudaStream_t;  // identical to the CUDA runtime's own typedef

namespace graft {

enum class Act : int { none = 0, relu = 1, relu6 = 2 };

// 2-D convolution.
//   x: [n][in_h][in_w][in_c]   w: [k_h][k_w][in_c/groups][out_c]   y: [n][out_h][out_w][out_c]
// Output (oy, ox), tap (ky, kx) reads input (oy*stride_h - pad_top + ky, ox*stride_w - pad_left +
// kx); taps outside the input read zero. Bottom/right padding is implied by out_h/out_w: that is
// how TensorFlow's asymmetric "SAME" padding (more padding after than before) is expressed.
struct ConvShape {
  int n, in_h, in_w, in_c;
  int out_h, out_w, out_c;
  int k_h, k_w;
  int stride_h, stride_w;
  int pad_top, pad_left;
  int groups;
};

// Pooling window, same geometry rules as ConvShape (channels are unchanged).
struct PoolShape {
  int n, in_h, in_w, c;
  int out_h, out_w;
  int k_h, k_w;
  int stride_h, stride_w;
  int pad_top, pad_left;
};

// One parameter tensor for the optimiser updates. m and v are optimiser state of the same size (v
// unused by SGD, may be null there). The tensor's learning rate is the call's lr times lr_scale
// (computed as one float product, the same on both devices): the backbone's tensors train at a
// fraction of the head's rate.
struct ParamRef {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t count;
  float weight_decay;
  float lr_scale = 1.f;
};

struct AdamWConfig {
  float lr, beta1, beta2, eps;
  int64_t step;  // 1-based, after this update
};

namespace cpu {

// y = act(conv(x, w) + bias + residual); bias [out_c] may be null; residual (shape of y) may be
// null.
void conv2d(const ConvShape& s, const float* x, const float* w, const float* bias,
            const float* residual, Act act, float* y);

// CPU only: the weights of a conv that stay as they are (a frozen layer) in the layout its GEMM
// reads, made once instead of on every call (packing is a tenth of a batch-1 forward). The layout
// is the CPU path's own: pack and run on the same path. conv2d_packed_size is 0 for a depthwise
// conv, which reads its weights as they are and has no packed form.
size_t conv2d_packed_size(const ConvShape& s);
void conv2d_pack(const ConvShape& s, const float* w, float* packed);
// conv2d with w given packed (conv2d_pack): the same bits.
void conv2d_packed(const ConvShape& s, const float* x, const float* w_packed, const float* bias,
                   const float* residual, Act act, float* y);

// CPU only: a pointwise expand (pw: 1x1, stride 1, one group) and the depthwise conv that reads
// its output, y = act_dw(dwconv(act_pw(x * w_pw + b_pw), w_dw) + b_dw), without writing the
// expanded activation out: it is made a band of rows at a time and consumed while in the caches.
// w_pw_packed is w_pw packed (conv2d_pack), or null. The same bits as conv2d twice. The GPU runs
// the pair as two conv2d calls.
void expand_depthwise(const ConvShape& pw, const float* x, const float* w_pw,
                      const float* w_pw_packed, const float* b_pw, Act act_pw, const ConvShape& dw,
                      const float* w_dw, const float* b_dw, Act act_dw, float* y);

// The same epilogue on its own: y[r][c] = act(x[r][c] + bias[c] + residual[r][c]). y may alias x.
void bias_act(int64_t rows, int c, const float* x, const float* bias, const float* residual,
              Act act, float* y);

// Max over the window; padded taps are ignored (as if -inf).
void max_pool2d(const PoolShape& s, const float* x, float* y);
// Mean over the window; count_pad: divide by k_h*k_w (PyTorch's default) instead of the number of
// in-bounds taps (TensorFlow's SAME).
void avg_pool2d(const PoolShape& s, bool count_pad, const float* x, float* y);
// x [n][hw][c] -> y [n][c]
void global_avg_pool(int n, int hw, int c, const float* x, float* y);

// y[n][out] = x[n][in] . w[out][in] + bias[out]; bias may be null.
void linear(int n, int in, int out, const float* x, const float* w, const float* bias, float* y);
// Gradients of linear. dw [out][in] and db [out] are overwritten (not accumulated); dx [n][in] and
// db may be null.
void linear_backward(int n, int in, int out, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db);

// Row-wise softmax of x [n][c]; y may alias x.
void softmax(int n, int c, const float* x, float* y);

// Fused softmax cross-entropy with label smoothing, forward and backward in one pass.
// Target q = (1 - smoothing) * onehot(label) + smoothing / c.
//   loss[i]       = -sum_j q_j log softmax(logits[i])_j               (per row, [n])
//   dlogits[i][j] = grad_scale * (softmax(logits[i])_j - q_j)         (grad_scale is 1/n for a
//   mean)
// dlogits may be null (evaluation). labels must be in [0, c).
void softmax_xent(int n, int c, const float* logits, const int32_t* labels, float smoothing,
                  float grad_scale, float* loss, float* dlogits);

// Inverted dropout with a counter-based RNG: element i is kept when the Philox4x32-10 uniform for
// (seed, counter_base + i) is >= p, and scaled by 1/(1-p). The mask depends only on (seed,
// counter), so the backward pass calls this same function on dy with the same seed and
// counter_base. y may alias x. p in [0, 1).
void dropout(int64_t count, float p, uint64_t seed, uint64_t counter_base, const float* x,
             float* y);

// uint8 image pixels -> float: y = (x / 255 - mean[ch]) / std[ch]; x [pixels][c], mean/std host
// [c].
void normalize_u8(int64_t pixels, int c, const uint8_t* x, const float* mean, const float* std,
                  float* y);

// PyTorch SGD: g' = g + wd * p; m = momentum * m + g'; p -= lr * m. params is a host array.
void sgd_momentum(const ParamRef* params, int num_params, float lr, float momentum);
// PyTorch AdamW: p *= 1 - lr*wd; m,v moments; p -= lr * mhat / (sqrt(vhat) + eps).
void adamw(const ParamRef* params, int num_params, const AdamWConfig& cfg);

// Metrics: for each row, pred = argmax(logits[i]) (first max wins);
// confusion[label[i] * c + pred] += 1. confusion [c][c] is accumulated, not cleared.
void confusion_update(int n, int c, const float* logits, const int32_t* labels, int64_t* confusion);

// dst[i][:] = src[rows[i]][:] for i < n; rows is an array in the same memory as src.
void gather_rows(int n, int cols, const float* src, const int32_t* rows, float* dst);

// Backward of ReLU, in place: dy[i] = y[i] > 0 ? dy[i] : 0, with y the ReLU's output.
void relu_backward(int64_t count, const float* y, float* dy);

// ---- Backward ops (fine-tuning through the backbone) ----------------------------------------
// The forward conv is y = act(conv(x, w) + bias + residual). Its backward runs as:
//   act_backward(y, dy)            dz = dy * act'(z), in place, from the saved output y
//   bias_grad(dz) -> db            the bias and, when there was one, the residual get dz itself
//   conv2d_backward_data(dz, w)    -> dx
//   conv2d_backward_filter(x, dz)  -> dw
// Every output is overwritten, never accumulated (add_inplace accumulates where two paths meet),
// and every reduction runs in a fixed order, so runs repeat bitwise on each device.

// dx [n][in_h][in_w][in_c] = the transposed convolution of dy [n][out_h][out_w][out_c] with w;
// input pixels no output reads (stride > kernel, bottom/right edge) get 0.
void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx);
// dw [k_h][k_w][in_c/groups][out_c] = sum over images and output pixels of x * dy.
void conv2d_backward_filter(const ConvShape& s, const float* x, const float* dy, float* dw);
// db[c] = sum over rows of dy[row][c].
void bias_grad(int64_t rows, int c, const float* dy, float* db);
// In place: dy[i] *= act'(z[i]) read off the saved output y = act(z): relu passes where y > 0,
// relu6 where 0 < y < 6, none everywhere.
void act_backward(int64_t count, Act act, const float* y, float* dy);
// dx [n][hw][c] = dy [n][c] / hw (global average pool's gradient, spread over the pixels).
void global_avg_pool_backward(int n, int hw, int c, const float* dy, float* dx);
// dx [n][in_h][in_w][c]: each output's gradient goes to the first maximum of its window (the tap
// forward picked, scanning ky then kx); x and y are the pool's saved input and output.
void max_pool2d_backward(const PoolShape& s, const float* x, const float* y, const float* dy,
                         float* dx);
// y[i] += x[i] (where a value feeds two ops, e.g. a residual, their gradients meet).
void add_inplace(int64_t count, const float* x, float* y);

}  // namespace cpu

namespace cuda {

void conv2d(const ConvShape& s, const float* x, const float* w, const float* bias,
            const float* residual, Act act, float* y, cudaStream_t stream);
void bias_act(int64_t rows, int c, const float* x, const float* bias, const float* residual,
              Act act, float* y, cudaStream_t stream);
void max_pool2d(const PoolShape& s, const float* x, float* y, cudaStream_t stream);
void avg_pool2d(const PoolShape& s, bool count_pad, const float* x, float* y, cudaStream_t stream);
void global_avg_pool(int n, int hw, int c, const float* x, float* y, cudaStream_t stream);
void linear(int n, int in, int out, const float* x, const float* w, const float* bias, float* y,
            cudaStream_t stream);
void linear_backward(int n, int in, int out, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, cudaStream_t stream);
void softmax(int n, int c, const float* x, float* y, cudaStream_t stream);
void softmax_xent(int n, int c, const float* logits, const int32_t* labels, float smoothing,
                  float grad_scale, float* loss, float* dlogits, cudaStream_t stream);
void dropout(int64_t count, float p, uint64_t seed, uint64_t counter_base, const float* x, float* y,
             cudaStream_t stream);
// mean and std are host arrays of c values (c <= 4).
void normalize_u8(int64_t pixels, int c, const uint8_t* x, const float* mean, const float* std,
                  float* y, cudaStream_t stream);
// params is a host array (the tensors it points to are on the device); one launch for all of them.
void sgd_momentum(const ParamRef* params, int num_params, float lr, float momentum,
                  cudaStream_t stream);
void adamw(const ParamRef* params, int num_params, const AdamWConfig& cfg, cudaStream_t stream);
void confusion_update(int n, int c, const float* logits, const int32_t* labels, int64_t* confusion,
                      cudaStream_t stream);
void gather_rows(int n, int cols, const float* src, const int32_t* rows, float* dst,
                 cudaStream_t stream);
void relu_backward(int64_t count, const float* y, float* dy, cudaStream_t stream);

// Backward ops: the graft::cpu declarations above, on a stream.
// The two reductions over pixels (dw, db) take a device workspace: without atomics, a parallel
// fixed-order sum writes per-chunk partial sums and adds them in a second pass, and the partials
// need memory. *_workspace says how many bytes a shape needs (0 when none; it depends on the shape
// only, never on the device); carve the largest once (an Arena) and pass it to every call. Calls
// that may overlap (two streams) need separate workspaces. Too small a workspace throws
// std::invalid_argument.
void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx,
                          cudaStream_t stream);
size_t conv2d_backward_filter_workspace(const ConvShape& s);
void conv2d_backward_filter(const ConvShape& s, const float* x, const float* dy, float* dw,
                            void* workspace, size_t workspace_bytes, cudaStream_t stream);
size_t bias_grad_workspace(int64_t rows, int c);
void bias_grad(int64_t rows, int c, const float* dy, float* db, void* workspace,
               size_t workspace_bytes, cudaStream_t stream);
void act_backward(int64_t count, Act act, const float* y, float* dy, cudaStream_t stream);
void global_avg_pool_backward(int n, int hw, int c, const float* dy, float* dx,
                              cudaStream_t stream);
void max_pool2d_backward(const PoolShape& s, const float* x, const float* y, const float* dy,
                         float* dx, cudaStream_t stream);
void add_inplace(int64_t count, const float* x, float* y, cudaStream_t stream);

}  // namespace cuda

// Geometry helpers shared by callers of both backends.
// TensorFlow "SAME": out = ceil(in / stride), total pad = max((out-1)*stride + k - in, 0), of which
// floor(total/2) goes before and the rest after.
inline void same_padding(int in, int k, int stride, int* out, int* pad_before) {
  int o = (in + stride - 1) / stride;
  int total = (o - 1) * stride + k - in;
  if (total < 0) total = 0;
  *out = o;
  *pad_before = total / 2;
}
// PyTorch explicit symmetric padding: out = floor((in + 2*pad - k) / stride) + 1.
inline int conv_out_size(int in, int k, int stride, int pad_before, int pad_after) {
  return (in + pad_before + pad_after - k) / stride + 1;
}

// One line describing a shape, for error messages and test failures.
inline std::string conv_shape_str(const ConvShape& s) {
  return "n=" + std::to_string(s.n) + " in=" + std::to_string(s.in_h) + "x" +
         std::to_string(s.in_w) + "x" + std::to_string(s.in_c) + " out=" + std::to_string(s.out_h) +
         "x" + std::to_string(s.out_w) + "x" + std::to_string(s.out_c) +
         " k=" + std::to_string(s.k_h) + "x" + std::to_string(s.k_w) +
         " stride=" + std::to_string(s.stride_h) + "x" + std::to_string(s.stride_w) +
         " pad=" + std::to_string(s.pad_top) + "," + std::to_string(s.pad_left) +
         " groups=" + std::to_string(s.groups);
}

inline std::string pool_shape_str(const PoolShape& s) {
  return "n=" + std::to_string(s.n) + " in=" + std::to_string(s.in_h) + "x" +
         std::to_string(s.in_w) + "x" + std::to_string(s.c) + " out=" + std::to_string(s.out_h) +
         "x" + std::to_string(s.out_w) + " k=" + std::to_string(s.k_h) + "x" +
         std::to_string(s.k_w) + " stride=" + std::to_string(s.stride_h) + "x" +
         std::to_string(s.stride_w) + " pad=" + std::to_string(s.pad_top) + "," +
         std::to_string(s.pad_left);
}

}  // namespace graft
