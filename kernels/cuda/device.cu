// Per-process device facts that the launch heuristics read.
#include <mutex>

#include "kernels/cuda/common.cuh"

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
