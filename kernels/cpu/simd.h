#pragma once
// A 16-float vector through the GCC/Clang vector extension: it keeps register tiles explicit
// (the compiler will not spill or re-vectorise them differently from build to build) without
// tying the code to one instruction set. On AVX-512 it is one zmm register; elsewhere the
// compiler splits it.
#include <cstring>

#include "kernels/ops.h"

namespace graft::cpu {

typedef float V16 __attribute__((vector_size(64)));
constexpr int kVec = 16;

inline V16 load16(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store16(float* p, V16 v) {
  std::memcpy(p, &v, sizeof v);
}
// s - 0 is exactly s for every s (0 + s is not: -0 + 0 = +0), so the compiler folds this to a
// broadcast and can fuse it into an FMA's memory operand.
inline V16 splat16(float s) {
  return s - V16{};
}

inline V16 act16(V16 v, Act act) {
  const V16 zero = {};
  if (act == Act::relu) return v > zero ? v : zero;
  if (act == Act::relu6) {
    const V16 six = splat16(6.f);
    v = v > zero ? v : zero;
    return v < six ? v : six;
  }
  return v;
}

}  // namespace graft::cpu
