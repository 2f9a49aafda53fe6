// Device dispatch of the backward ops: the CPU twin or the CUDA kernel, as for the forward ops in
// engine/device.cpp.
#include <algorithm>

#include "engine/device.h"
#include "engine/dispatch.h"

namespace graft {

size_t op_backward_workspace_bytes(const Device& d, const ConvShape& s) {
#ifdef GRAFT_HAVE_CUDA
  if (d.is_cuda())
    return std::max(cuda::conv2d_backward_filter_workspace(s),
                    cuda::bias_grad_workspace(int64_t(s.n) * s.out_h * s.out_w, s.out_c));
#endif
  (void)d, (void)s;
  return 0;
}

void op_conv2d_backward_data(const Device& d, const ConvShape& s, const float* dy, const float* w,
                             float* dx) {
  GRAFT_DISPATCH(d, cpu::conv2d_backward_data(s, dy, w, dx),
                 cuda::conv2d_backward_data(s, dy, w, dx, d.stream));
}

void op_conv2d_backward_filter(const Device& d, const ConvShape& s, const float* x, const float* dy,
                               float* dw, void* ws, size_t ws_bytes) {
  (void)ws, (void)ws_bytes;
  GRAFT_DISPATCH(d, cpu::conv2d_backward_filter(s, x, dy, dw),
                 cuda::conv2d_backward_filter(s, x, dy, dw, ws, ws_bytes, d.stream));
}

void op_bias_grad(const Device& d, int64_t rows, int c, const float* dy, float* db, void* ws,
                  size_t ws_bytes) {
  (void)ws, (void)ws_bytes;
  GRAFT_DISPATCH(d, cpu::bias_grad(rows, c, dy, db),
                 cuda::bias_grad(rows, c, dy, db, ws, ws_bytes, d.stream));
}

void op_act_backward(const Device& d, int64_t count, Act act, const float* y, float* dy) {
  GRAFT_DISPATCH(d, cpu::act_backward(count, act, y, dy),
                 cuda::act_backward(count, act, y, dy, d.stream));
}

void op_global_avg_pool_backward(const Device& d, int n, int hw, int c, const float* dy,
                                 float* dx) {
  GRAFT_DISPATCH(d, cpu::global_avg_pool_backward(n, hw, c, dy, dx),
                 cuda::global_avg_pool_backward(n, hw, c, dy, dx, d.stream));
}

void op_max_pool2d_backward(const Device& d, const PoolShape& s, const float* x, const float* y,
                            const float* dy, float* dx) {
  GRAFT_DISPATCH(d, cpu::max_pool2d_backward(s, x, y, dy, dx),
                 cuda::max_pool2d_backward(s, x, y, dy, dx, d.stream));
}

void op_add_inplace(const Device& d, int64_t count, const float* x, float* y) {
  GRAFT_DISPATCH(d, cpu::add_inplace(count, x, y), cuda::add_inplace(count, x, y, d.stream));
}

}  // namespace graft
