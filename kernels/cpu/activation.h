#pragma once
// The scalar activation shared by every CPU path, so the fused epilogues and the reference agree
// bit for bit on the clamp.
#include "kernels/ops.h"

namespace graft::cpu {

inline float apply_act(float v, Act act) {
  if (act == Act::relu) return v > 0.f ? v : 0.f;
  if (act == Act::relu6) return v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
  return v;
}

}  // namespace graft::cpu
