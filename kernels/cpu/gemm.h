#pragma once
// Row-major SGEMM with a fused conv epilogue, the engine under the pointwise and im2col convolution
// paths. gemm and gemm_packed are single-threaded (callers split the work); gemm_threads splits one
// whole product across the OpenMP team.
#include <cstddef>
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

// B packed once for many GEMMs that share it (a layer's weights under every row block): gemm packs
// B again for each call, which costs as much as the multiply when a call has few rows. The packed
// form is B's columns in panels of gemm_panel_width() floats, each panel k rows of its width
// rounded up to whole vectors and zero-padded: packed_b_size(n, k) floats. pack_b writes panels
// [panel_lo, panel_hi), so threads can share the work.
int gemm_panel_width();
size_t packed_b_size(int n, int k);
void pack_b(int n, int k, const float* b, int64_t ldb, float* packed, int panel_lo, int panel_hi);
// The calling thread's buffer for a layer's weights packed once per call and shared by its team
// (pass the pointer, not the thread_local, into the parallel region): at least `floats` long,
// reused by the calling thread's next call.
float* call_pack_buffer(size_t floats);

// C[m][n] = A[m][k] * packed B's columns [j0, j0 + n), then the epilogue unless ep is null. j0 is
// a multiple of the panel width, and j0 + n is one too or B's last column.
void gemm_packed(int m, int n, int k, const float* a, int64_t lda, const float* packed, int j0,
                 float* c, int64_t ldc, const Epilogue* ep);

// C[m][n] = A[m][k] * B[k][n] + epilogue (ep may be null), A, B, C and the residual contiguous
// (leading dimensions k, n, n, n), on every thread: items of (row block, column block), B packed
// once up front when there are enough row blocks to pay for it. b_packed, when not null, is B
// already packed (pack_b, every panel) and b is not read.
void gemm_threads(int64_t m, int n, int k, const float* a, const float* b, float* c,
                  const Epilogue* ep, const float* b_packed = nullptr);

}  // namespace graft::cpu::GRAFT_CPU_NS
