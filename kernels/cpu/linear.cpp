// The classifier head: linear forward as blocked dot products (w is [out][in], so each output is a
// dot of two contiguous rows), backward through the GEMM used by the convolutions.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kernel_table.h"
#include "kernels/cpu/simd.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {
namespace {

inline float hsum(Vec v) {
  float s = 0.f;
  for (int j = 0; j < kVec; ++j) s += v[j];
  return s;
}

// RN x RO block of outputs: RN rows of x against RO rows of w, kVec lanes of partial sums each, so
// every loaded vector feeds several FMAs. The lanes are added at the end, so the sum's order
// follows the vector width: paths agree within rounding here, not bit for bit.
template <int RN, int RO>
void dot_block(int in, const float* x, const float* w, const float* bias, int out, float* y) {
  Vec acc[RN][RO] = {};
  int k = 0;
  for (; k + kVec <= in; k += kVec) {
    Vec wv[RO];
    for (int o = 0; o < RO; ++o) wv[o] = loadv(w + int64_t(o) * in + k);
    for (int i = 0; i < RN; ++i) {
      const Vec xv = loadv(x + int64_t(i) * in + k);
      for (int o = 0; o < RO; ++o) acc[i][o] += xv * wv[o];
    }
  }
  for (int i = 0; i < RN; ++i)
    for (int o = 0; o < RO; ++o) {
      float s = hsum(acc[i][o]);
      for (int kk = k; kk < in; ++kk) s += x[int64_t(i) * in + kk] * w[int64_t(o) * in + kk];
      y[int64_t(i) * out + o] = s + (bias ? bias[o] : 0.f);
    }
}

}  // namespace

void linear(int n, int in, int out, const float* x, const float* w, const float* bias, float* y) {
  // RN*RO accumulators plus RO weight vectors and one of x: 4x4 with 32 registers, 3x3 with 16,
  // 2x2 without FMA.
  constexpr int RN = kAccRegs >= 24 ? 4 : kAccRegs >= 12 ? 3 : 2, RO = RN;
  const int nb = (n + RN - 1) / RN, ob = (out + RO - 1) / RO;
#pragma omp parallel for schedule(static) if (int64_t(n) * in * out > 65536)
  for (int64_t item = 0; item < int64_t(nb) * ob; ++item) {
    const int i0 = int(item / ob) * RN, o0 = int(item % ob) * RO;
    const float* xb = x + int64_t(i0) * in;
    const float* wb = w + int64_t(o0) * in;
    const float* bb = bias ? bias + o0 : nullptr;
    float* yb = y + int64_t(i0) * out + o0;
    if (i0 + RN <= n && o0 + RO <= out) {
      dot_block<RN, RO>(in, xb, wb, bb, out, yb);
    } else {
      // Edge blocks one output at a time.
      for (int i = 0; i < std::min(RN, n - i0); ++i)
        for (int o = 0; o < std::min(RO, out - o0); ++o)
          dot_block<1, 1>(in, xb + int64_t(i) * in, wb + int64_t(o) * in, bb ? bb + o : nullptr,
                          out, yb + int64_t(i) * out + o);
    }
  }
}

void linear_backward(int n, int in, int out, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db) {
  constexpr int kCols = 256;
  const int col_blocks = (in + kCols - 1) / kCols;
  // dw = dy^T x needs dy^T as a row-major A; dy is small (batch x classes), so transpose it once.
  // Reused across calls: this runs every training step, which must not allocate.
  static thread_local std::vector<float> dyt;
  if (dyt.size() < size_t(out) * n) dyt.resize(size_t(out) * n);
  // The pointer, not the thread_local, goes into the parallel region: there every thread would
  // see its own (empty) copy.
  float* const dy_t = dyt.data();
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < out; ++o) dy_t[size_t(o) * n + i] = dy[int64_t(i) * out + o];
  const int64_t work = int64_t(n) * in * out;
#pragma omp parallel if (work > 65536)
  {
    // dx[n][in] = dy[n][out] . w[out][in] and dw[out][in] = dy^T[out][n] . x[n][in], each split by
    // column blocks of `in` so both cores share even a batch of one.
    if (dx) {
#pragma omp for schedule(static) nowait
      for (int cb = 0; cb < col_blocks; ++cb) {
        const int j0 = cb * kCols, cols = std::min(kCols, in - j0);
        gemm(n, cols, out, dy, out, w + j0, in, dx + j0, in, false, nullptr);
      }
    }
#pragma omp for schedule(static) nowait
    for (int cb = 0; cb < col_blocks; ++cb) {
      const int j0 = cb * kCols, cols = std::min(kCols, in - j0);
      gemm(out, cols, n, dy_t, n, x + j0, in, dw + j0, in, false, nullptr);
    }
#pragma omp single
    if (db) {
      for (int o = 0; o < out; ++o) db[o] = 0.f;
      for (int i = 0; i < n; ++i)
        for (int o = 0; o < out; ++o) db[o] += dy[int64_t(i) * out + o];
    }
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
