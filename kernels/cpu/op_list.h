#pragma once
// Every CPU op of kernels/ops.h as one list: X(return type, name, (parameters), (arguments)).
// Each CPU path defines these functions in its own namespace (graft::cpu::avx2::conv2d, ...), and
// kernels/cpu/cpu_path.cpp builds from the list the table of one path and the graft::cpu::
// functions that call through the table of the path in use. A signature here that differs from
// ops.h's fails to link.
#include "kernels/ops.h"

#define GRAFT_CPU_OPS(X)                                                                           \
  X(void, conv2d,                                                                                  \
    (const ConvShape& s, const float* x, const float* w, const float* bias, const float* residual, \
     Act act, float* y),                                                                           \
    (s, x, w, bias, residual, act, y))                                                             \
  X(size_t, conv2d_packed_size, (const ConvShape& s), (s))                                         \
  X(void, conv2d_pack, (const ConvShape& s, const float* w, float* packed), (s, w, packed))        \
  X(void, conv2d_packed,                                                                           \
    (const ConvShape& s, const float* x, const float* w_packed, const float* bias,                 \
     const float* residual, Act act, float* y),                                                    \
    (s, x, w_packed, bias, residual, act, y))                                                      \
  X(void, expand_depthwise,                                                                        \
    (const ConvShape& pw, const float* x, const float* w_pw, const float* w_pw_packed,             \
     const float* b_pw, Act act_pw, const ConvShape& dw, const float* w_dw, const float* b_dw,     \
     Act act_dw, float* y),                                                                        \
    (pw, x, w_pw, w_pw_packed, b_pw, act_pw, dw, w_dw, b_dw, act_dw, y))                           \
  X(void, bias_act,                                                                                \
    (int64_t rows, int c, const float* x, const float* bias, const float* residual, Act act,       \
     float* y),                                                                                    \
    (rows, c, x, bias, residual, act, y))                                                          \
  X(void, max_pool2d, (const PoolShape& s, const float* x, float* y), (s, x, y))                   \
  X(void, avg_pool2d, (const PoolShape& s, bool count_pad, const float* x, float* y),              \
    (s, count_pad, x, y))                                                                          \
  X(void, global_avg_pool, (int n, int hw, int c, const float* x, float* y), (n, hw, c, x, y))     \
  X(void, linear,                                                                                  \
    (int n, int in, int out, const float* x, const float* w, const float* bias, float* y),         \
    (n, in, out, x, w, bias, y))                                                                   \
  X(void, linear_backward,                                                                         \
    (int n, int in, int out, const float* x, const float* w, const float* dy, float* dx,           \
     float* dw, float* db),                                                                        \
    (n, in, out, x, w, dy, dx, dw, db))                                                            \
  X(void, softmax, (int n, int c, const float* x, float* y), (n, c, x, y))                         \
  X(void, softmax_xent,                                                                            \
    (int n, int c, const float* logits, const int32_t* labels, float smoothing, float grad_scale,  \
     float* loss, float* dlogits),                                                                 \
    (n, c, logits, labels, smoothing, grad_scale, loss, dlogits))                                  \
  X(void, dropout,                                                                                 \
    (int64_t count, float p, uint64_t seed, uint64_t counter_base, const float* x, float* y),      \
    (count, p, seed, counter_base, x, y))                                                          \
  X(void, normalize_u8,                                                                            \
    (int64_t pixels, int c, const uint8_t* x, const float* mean, const float* std, float* y),      \
    (pixels, c, x, mean, std, y))                                                                  \
  X(void, sgd_momentum, (const ParamRef* params, int num_params, float lr, float momentum),        \
    (params, num_params, lr, momentum))                                                            \
  X(void, adamw, (const ParamRef* params, int num_params, const AdamWConfig& cfg),                 \
    (params, num_params, cfg))                                                                     \
  X(void, confusion_update,                                                                        \
    (int n, int c, const float* logits, const int32_t* labels, int64_t* confusion),                \
    (n, c, logits, labels, confusion))                                                             \
  X(void, gather_rows, (int n, int cols, const float* src, const int32_t* rows, float* dst),       \
    (n, cols, src, rows, dst))                                                                     \
  X(void, relu_backward, (int64_t count, const float* y, float* dy), (count, y, dy))               \
  X(void, conv2d_backward_data, (const ConvShape& s, const float* dy, const float* w, float* dx),  \
    (s, dy, w, dx))                                                                                \
  X(void, conv2d_backward_filter,                                                                  \
    (const ConvShape& s, const float* x, const float* dy, float* dw), (s, x, dy, dw))              \
  X(void, bias_grad, (int64_t rows, int c, const float* dy, float* db), (rows, c, dy, db))         \
  X(void, act_backward, (int64_t count, Act act, const float* y, float* dy), (count, act, y, dy))  \
  X(void, global_avg_pool_backward, (int n, int hw, int c, const float* dy, float* dx),            \
    (n, hw, c, dy, dx))                                                                            \
  X(void, max_pool2d_backward,                                                                     \
    (const PoolShape& s, const float* x, const float* y, const float* dy, float* dx),              \
    (s, x, y, dy, dx))                                                                             \
  X(void, add_inplace, (int64_t count, const float* x, float* y), (count, x, y))                   \
  X(double, fma_peak, (int64_t iters, float* sink), (iters, sink))
