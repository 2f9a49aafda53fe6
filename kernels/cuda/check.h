#pragma once
// The one error-checking macro for CUDA calls, and its twin for kernel launches. A failure throws
// std::runtime_error naming the call (or kernel and shapes), the file and the line, so the caller
// can report it and stop cleanly instead of crashing.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace graft {
[[noreturn]] inline void cuda_fail(cudaError_t err, const char* what, const std::string& detail,
                                   const char* file, int line) {
  std::string msg = std::string("CUDA error in ") + what;
  if (!detail.empty()) msg += " [" + detail + "]";
  msg += ": " + std::string(cudaGetErrorString(err)) + " (" + file + ":" + std::to_string(line) + ")";
  if (err == cudaErrorMemoryAllocation) msg += "; lower --batch-size or the image size";
  throw std::runtime_error(msg);
}
}  // namespace graft

#define CUDA_CHECK(call)                                                              \
  do {                                                                                \
    cudaError_t graft_err_ = (call);                                                  \
    if (graft_err_ != cudaSuccess) ::graft::cuda_fail(graft_err_, #call, "", __FILE__, __LINE__); \
  } while (0)

// After every launch: `kernel` names it, `detail` is a std::string with the shapes.
#define CUDA_CHECK_LAUNCH(kernel, detail)                                             \
  do {                                                                                \
    cudaError_t graft_err_ = cudaGetLastError();                                      \
    if (graft_err_ != cudaSuccess) ::graft::cuda_fail(graft_err_, kernel, (detail), __FILE__, __LINE__); \
  } while (0)
