#pragma once
// In the emulated build (-DGRAFT_CUDA_EMULATION=ON) this folder comes first on the include path,
// so the kernels and the engine get the emulation in place of the CUDA runtime.
#include "kernels/emu/cuda_emulation.h"
