// Confusion matrix update: one thread per row finds argmax with the CPU twin's exact rule (strict
// >, scanning from j = 0, so the first of equal maxima wins and NaNs never win), then adds 1 to
// confusion[label][pred] with a 64-bit integer atomic. Integer addition commutes, so the result is
// deterministic. Rows are batch-sized (n up to a few thousand), so one thread per row is plenty.
#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

__global__ void confusion_kernel(int n, int c, const float* __restrict__ logits,
                                 const int32_t* __restrict__ labels,
                                 unsigned long long* confusion) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float* z = logits + static_cast<int64_t>(i) * c;
    int pred = 0;
    float best = z[0];
    for (int j = 1; j < c; ++j) {
      const float v = z[j];
      if (v > best) best = v, pred = j;
    }
    const int label = labels[i];
    if (label >= 0 && label < c)  // a bad label is dropped rather than written out of bounds
      atomicAdd(confusion + static_cast<int64_t>(label) * c + pred, 1ull);
  }
}

}  // namespace

void confusion_update(int n, int c, const float* logits, const int32_t* labels, int64_t* confusion,
                      cudaStream_t stream) {
  const std::string detail = "n=" + std::to_string(n) + " c=" + std::to_string(c);
  if (n < 0 || c <= 0) invalid("confusion_update", "bad shape: " + detail);
  if (n == 0) return;
  static_assert(sizeof(unsigned long long) == sizeof(int64_t), "64-bit counters");
  GRAFT_LAUNCH(grid_for(n, 128), 128, 0, stream, confusion_kernel)
  (n, c, logits, labels, reinterpret_cast<unsigned long long*>(confusion));
  CUDA_CHECK_LAUNCH("confusion_kernel", detail);
}

}  // namespace graft::cuda
