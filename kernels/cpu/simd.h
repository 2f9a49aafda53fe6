#pragma once
// The vector type of the CPU kernels, one width per instruction set. Every file that includes this
// is compiled once per CPU path (kernels/cpu/cpu_path.h; CMake passes the path's -march and its
// name as GRAFT_CPU_NS), and the tile shapes of the kernels follow from the two numbers below:
//
//   path     vector       registers   accumulators a tile may hold (kAccRegs)
//   avx512   16 floats    32 zmm      24
//   avx2      8 floats    16 ymm      12
//   neon      4 floats    32 q        24
//   sse2      4 floats    16 xmm       8   (x86-64's baseline; no FMA, so a multiply-add
//                                          needs a register for the product)
//
// The rest of the register file holds the operands of each step: the B vectors of a GEMM step and
// a broadcast of A, or a depthwise conv's weight vectors. Going over the budget spills
// accumulators to the stack inside the innermost loop, which costs the path most of its speed.
//
// Vec is a GCC/Clang vector extension type: register tiles stay explicit (the compiler will not
// spill or re-vectorise them differently from build to build) without tying the code to one
// instruction set's intrinsics.
#include <cstring>

#include "kernels/ops.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#ifndef GRAFT_CPU_NS
#error "kernels/cpu/simd.h is included by the per-path kernel files only (GRAFT_CPU_NS unset)"
#endif

namespace graft::cpu::GRAFT_CPU_NS {

#if defined(__AVX512F__)
constexpr int kVec = 16, kAccRegs = 24;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kVec = 8, kAccRegs = 12;
#elif defined(__aarch64__)
constexpr int kVec = 4, kAccRegs = 24;
#else
constexpr int kVec = 4, kAccRegs = 8;
#endif

// The depthwise kernels' channel blocks (kernels/cpu/conv2d.cpp, conv2d_backward.cpp): P
// neighbouring pixels x NV vectors of channels, P*NV accumulators. 4x4 where 24 fit, then 2 and
// 1 vectors with as many pixels as the budget allows (4x2 and 8x1, or 2x2 and 4x1 on sse2).
constexpr int kDwPixels2 = kAccRegs >= 12 ? 4 : 2;  // pixels of the 2-vector block
constexpr int kDwPixels1 = 2 * kDwPixels2;          // pixels of the 1-vector block

typedef float Vec __attribute__((vector_size(kVec * sizeof(float))));

inline Vec loadv(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storev(float* p, Vec v) {
  std::memcpy(p, &v, sizeof v);
}
// The first n floats at p (0 <= n <= kVec), zeros in the other lanes, and the matching store: the
// column tail of a register tile. AVX-512 and AVX2 mask the lanes (no access past p + n, so no
// fault at the end of a buffer); elsewhere a lane loop. A libc memcpy of the tail through a
// scratch row cost more than the tile's arithmetic on narrow layers (24 and 40 channels).
inline Vec loadv_first(const float* p, int n) {
#if defined(__AVX512F__)
  return Vec(_mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p));
#elif defined(__AVX2__)
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return Vec(_mm256_maskload_ps(p, mask));
#else
  Vec v{};
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
#endif
}
inline void storev_first(float* p, Vec v, int n) {
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), __m512(v));
#elif defined(__AVX2__)
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  _mm256_maskstore_ps(p, mask, __m256(v));
#else
  for (int i = 0; i < n; ++i) p[i] = v[i];
#endif
}

// s - 0 is exactly s for every s (0 + s is not: -0 + 0 = +0), so the compiler folds this to a
// broadcast and can fuse it into an FMA's memory operand.
inline Vec splat(float s) {
  return s - Vec{};
}

inline Vec act_vec(Vec v, Act act) {
  const Vec zero = {};
  if (act == Act::relu) return v > zero ? v : zero;
  if (act == Act::relu6) {
    const Vec six = splat(6.f);
    v = v > zero ? v : zero;
    return v < six ? v : six;
  }
  return v;
}

}  // namespace graft::cpu::GRAFT_CPU_NS
