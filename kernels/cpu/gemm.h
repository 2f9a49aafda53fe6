#pragma once
// Single-threaded row-major SGEMM with a fused conv epilogue, the engine under the pointwise and
// im2col convolution paths. Callers split work across threads; this routine never does.
#include <cstdint>

#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

// Applied once per output element after the full K sum: v += bias[col]; v += residual[row][col];
// v = act(v). bias and residual may be null. Pointers are already offset to C's first row/column.
struct Epilogue {
  const float* bias;
  const float* residual;
  int64_t ld_residual;
  Act act;
};

// C[m][n] = A[m][k] * B[k][n] (or C += A * B when accumulate), then the epilogue unless ep is
// null. All three are row-major with the given leading dimensions (in floats): B can be a column
// slice of a wider matrix (a group's weights), and A's rows may overlap (lda < k), which is how a
// convolution's kernel row reads its taps straight out of the input.
void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
          int64_t ldc, bool accumulate, const Epilogue* ep);

}  // namespace graft::cpu::GRAFT_CPU_NS
