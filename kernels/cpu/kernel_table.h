#pragma once
// The table of one CPU path's kernels (kernels/cpu/cpu_path.h): a function pointer per op of
// kernels/cpu/op_list.h. A file compiled for a path (GRAFT_CPU_NS set) also sees that path's
// declarations, graft::cpu::<path>::conv2d and the rest, which its definitions must match.
#include "kernels/cpu/op_list.h"

namespace graft::cpu {

struct CpuKernels {
#define GRAFT_CPU_FIELD(ret, name, params, args) ret(*name) params;
  GRAFT_CPU_OPS(GRAFT_CPU_FIELD)
#undef GRAFT_CPU_FIELD
};

#ifdef GRAFT_CPU_NS
namespace GRAFT_CPU_NS {
#define GRAFT_CPU_DECLARE(ret, name, params, args) ret name params;
GRAFT_CPU_OPS(GRAFT_CPU_DECLARE)
#undef GRAFT_CPU_DECLARE
// Defined in kernels/cpu/kernel_table.cpp.
extern const CpuKernels kernels;
}  // namespace GRAFT_CPU_NS
#endif

}  // namespace graft::cpu
