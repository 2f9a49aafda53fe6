#pragma once
// Plain, obviously-correct versions of every op in kernels/ops.h. They are the yardstick the
// fast CPU twins (and through them the CUDA kernels) are tested against, so they favour direct
// loops over speed and accumulate in double where a sum is long.
#include "kernels/ops.h"

namespace graft::cpu::ref {

void conv2d(const ConvShape& s, const float* x, const float* w, const float* bias,
            const float* residual, Act act, float* y);
void bias_act(int64_t rows, int c, const float* x, const float* bias, const float* residual,
              Act act, float* y);
void max_pool2d(const PoolShape& s, const float* x, float* y);
void avg_pool2d(const PoolShape& s, bool count_pad, const float* x, float* y);
void global_avg_pool(int n, int hw, int c, const float* x, float* y);
void linear(int n, int in, int out, const float* x, const float* w, const float* bias, float* y);
void linear_backward(int n, int in, int out, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db);
void softmax(int n, int c, const float* x, float* y);
void softmax_xent(int n, int c, const float* logits, const int32_t* labels, float smoothing,
                  float grad_scale, float* loss, float* dlogits);
void dropout(int64_t count, float p, uint64_t seed, uint64_t counter_base, const float* x,
             float* y);
void normalize_u8(int64_t pixels, int c, const uint8_t* x, const float* mean, const float* std,
                  float* y);
void sgd_momentum(const ParamRef* params, int num_params, float lr, float momentum);
void adamw(const ParamRef* params, int num_params, const AdamWConfig& cfg);
void confusion_update(int n, int c, const float* logits, const int32_t* labels, int64_t* confusion);

// Backward convolution, one output element at a time with a double accumulator: dx gathers every
// (output pixel, tap) that read it, dw sums x * dy over images and output pixels.
void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx);
void conv2d_backward_filter(const ConvShape& s, const float* x, const float* dy, float* dw);

}  // namespace graft::cpu::ref
