// Per-process device facts: what the launch heuristics read, and whether this binary can run on
// the card at all.
#include <mutex>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernel_image.h"

namespace graft::cuda {

int sm_count() {
  // Read once per device; the engine runs on one device, but tests may switch, so key by id.
  static std::mutex mu;
  static int cached[64] = {};
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    int sms = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cached[dev] = sms > 0 ? sms : 1;
  }
  return cached[dev];
}

}  // namespace graft::cuda

namespace graft::cuda {

namespace {
// Compiled with the same architecture list as every other kernel, so if the driver can load this
// one for the card, it can load them all.
__global__ void probe_kernel() {}
}  // namespace

bool kernel_image_available(std::string* why) {
  cudaFuncAttributes attr{};
  const cudaError_t err = cudaFuncGetAttributes(&attr, probe_kernel);
  if (err == cudaSuccess) return true;
  cudaGetLastError();  // not sticky, but leave no error behind for the next check
  int dev = 0, major = 0, minor = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess) {
    major = prop.major;
    minor = prop.minor;
  }
  if (why)
    *why = std::string(prop.name[0] ? prop.name : "this GPU") + " (sm_" + std::to_string(major) +
           std::to_string(minor) + ") cannot run this build's kernels: " + cudaGetErrorString(err);
  return false;
}

}  // namespace graft::cuda
