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

// Every dot product keeps 16 lanes of partial sums, whatever the vector width (one AVX-512 vector,
// two of AVX2, four of NEON), and adds them in lane order at the end: the order of every sum is
// then the same on every path with FMA, and so are the bits. The layer is small next to the convs
// (the head), so its blocks are sized for that rather than for the last FLOP.
constexpr int kLanes = 16;
constexpr int kVecsPerLanes = kLanes / kVec;
static_assert(kLanes % kVec == 0, "16 lanes must be whole vectors");

// RN x RO block of outputs: RN rows of x against RO rows of w, each weight vector feeding RN FMAs
// and each x vector RO of them. RN*RO*kVecsPerLanes accumulators: 4x4x1 on AVX-512, 2x2x2 on
// AVX2, 2x2x4 on NEON, 1x1x4 on SSE2.
constexpr int kBlock = kVecsPerLanes == 1 ? 4 : kAccRegs >= 12 ? 2 : 1;

// One 16-input step of an RN x RO block at input k. Tail: the last in % 16 inputs, into the same
// lanes, loaded masked with zeros past `in` (a scalar tail loop would leave the compiler free to
// fuse its multiply-adds or not, differently per path and per tuning). The loops have fixed trip
// counts and are unrolled: indexed at run time, the accumulators would live on the stack.
template <int RN, int RO, bool Tail>
inline void dot_step(Vec (&acc)[RN][RO][kVecsPerLanes], int in, const float* x, const float* w,
                     int k) {
#pragma GCC unroll 4
  for (int v = 0; v < kVecsPerLanes; ++v) {
    const int left = Tail ? std::clamp(in - k - kVec * v, 0, kVec) : kVec;
    auto ld = [&](const float* p) { return Tail ? loadv_first(p, left) : loadv(p); };
    Vec wv[RO];
    for (int o = 0; o < RO; ++o) wv[o] = ld(w + int64_t(o) * in + k + kVec * v);
    for (int i = 0; i < RN; ++i) {
      const Vec xv = ld(x + int64_t(i) * in + k + kVec * v);
      for (int o = 0; o < RO; ++o) acc[i][o][v] += xv * wv[o];
    }
  }
}

template <int RN, int RO>
void dot_block(int in, const float* x, const float* w, const float* bias, int out, float* y) {
  Vec acc[RN][RO][kVecsPerLanes] = {};
  int k = 0;
  for (; k + kLanes <= in; k += kLanes) dot_step<RN, RO, false>(acc, in, x, w, k);
  if (k < in) dot_step<RN, RO, true>(acc, in, x, w, k);
    // Each output's 16 lanes summed in order, through a row of floats: the unrolled stores keep acc
    // in registers up to here.
#pragma GCC unroll 4
  for (int i = 0; i < RN; ++i)
#pragma GCC unroll 4
    for (int o = 0; o < RO; ++o) {
      float lanes[kLanes];
#pragma GCC unroll 4
      for (int v = 0; v < kVecsPerLanes; ++v) storev(lanes + kVec * v, acc[i][o][v]);
      float s = 0.f;
      for (int j = 0; j < kLanes; ++j) s += lanes[j];
      y[int64_t(i) * out + o] = s + (bias ? bias[o] : 0.f);
    }
}

}  // namespace

void linear(int n, int in, int out, const float* x, const float* w, const float* bias, float* y) {
  constexpr int RN = kBlock, RO = kBlock;
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
