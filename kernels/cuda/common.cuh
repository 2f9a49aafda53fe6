#pragma once
// Small helpers shared by the CUDA kernel files: argument checks that name the op and shape, the
// activation epilogue, launch-size arithmetic and alignment tests for the float4 paths.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/ops.h"

// A kernel launch, `kernel<<<grid, block, shared_bytes, stream>>>(args)` on nvcc, written
// GRAFT_LAUNCH(grid, block, shared_bytes, stream, kernel)(args) so that the emulated build
// (kernels/emu) can run it with a host compiler. The kernel comes last because a template's
// argument list may hold commas.
#if GRAFT_CUDA_EMULATION
#define GRAFT_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::graft::emu::Launch(__VA_ARGS__, grid, block, shared_bytes, stream, #__VA_ARGS__)
// The block's dynamic shared memory as a `T*` named `name` (`extern __shared__ T name[]`).
#define GRAFT_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::graft::emu::dynamic_shared())
#else
#define GRAFT_LAUNCH(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define GRAFT_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

namespace graft::cuda {

[[noreturn]] inline void invalid(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("graft::cuda::") + op + ": " + what);
}

inline void require(bool ok, const char* op, const std::string& what) {
  if (!ok) invalid(op, what);
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

inline bool mult4(int64_t v) {
  return (v & 3) == 0;
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Multiprocessor count of the current device, read once per process (used to size grids so that
// small problems still spread over every SM, and grid-stride loops over at most a few waves).
int sm_count();

// Blocks for a grid-stride loop: enough to cover `work` items at `per_block` items each, capped at
// a few waves so that huge tensors reuse threads instead of launching millions of blocks.
inline unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t blocks = ceil_div(work, per_block);
  int64_t cap = static_cast<int64_t>(sm_count()) * 16;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

__device__ __forceinline__ float apply_act(float v, int act) {
  // `act` is launch-uniform, so the branch never diverges. The comparison form matches the CPU
  // twin (kernels/cpu/activation.h), so the clamp agrees bit for bit, NaN included (NaN -> 0).
  if (act == static_cast<int>(Act::relu)) return v > 0.f ? v : 0.f;
  if (act == static_cast<int>(Act::relu6)) return v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
  return v;
}

__device__ __forceinline__ float4 ld4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ void st4(float* p, float4 v) {
  *reinterpret_cast<float4*>(p) = v;
}

}  // namespace graft::cuda
