// One CPU path's table, compiled once per path like the kernels it points to.
#include "kernels/cpu/kernel_table.h"

namespace graft::cpu::GRAFT_CPU_NS {

const CpuKernels kernels = {
#define GRAFT_CPU_ADDRESS(ret, name, params, args) &name,
    GRAFT_CPU_OPS(GRAFT_CPU_ADDRESS)
#undef GRAFT_CPU_ADDRESS
};

}  // namespace graft::cpu::GRAFT_CPU_NS
