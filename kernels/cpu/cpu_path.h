#pragma once
// Which CPU path runs the CPU kernels. One binary carries the kernels compiled for several
// instruction sets (x86-64: avx512, avx2 and the sse2 baseline; aarch64: neon), and the graft::cpu
// ops of kernels/ops.h call the best path this CPU supports, picked the first time a kernel runs,
// the way onnxruntime's MLAS picks its kernels. GRAFT_CPU=<name> in the environment asks for a
// lower path (GRAFT_CPU=avx2 on an AVX-512 machine); tests and benchmarks switch with
// set_cpu_path().
//
// Within a path every op gives the same bits for the same inputs on every run. Across paths the
// results agree within the tolerances of the tests against kernels/cpu/reference.h (paths with FMA
// round differently from sse2, which has none).
#include <cstdint>
#include <string>
#include <vector>

namespace graft::cpu {

enum class CpuPath { sse2, avx2, avx512, neon, generic };

const char* cpu_path_name(CpuPath path);
// What the path needs of the CPU, for messages ("AVX-512 (F, BW, DQ, VL, CD)").
const char* cpu_path_needs(CpuPath path);
// The paths this binary carries, best first.
std::vector<CpuPath> cpu_paths_built();
// Those this CPU (and its operating system) can run, best first. Empty only in a build of a
// subset of the paths (GRAFT_CPU_PATHS) run on a CPU that has none of them.
std::vector<CpuPath> cpu_paths_supported();
bool cpu_path_supported(CpuPath path);

// The path in use (chosen on the first call: GRAFT_CPU, else the best supported).
CpuPath cpu_path();
// Switches every later kernel call to `path`; false, and nothing changes, when this CPU cannot run
// it. Not to be called while a kernel runs on another thread.
bool set_cpu_path(CpuPath path);

// Applies GRAFT_CPU from the environment, or the best path when it is unset or empty. Returns an
// empty string, or the reason GRAFT_CPU cannot be used (then the path is left unchanged): an
// unknown name, or a path this CPU lacks. graft calls it at start so that a bad value is reported
// as an error; a kernel called first applies it too, and a bad value then ends the process with
// the same message (exit status 2).
std::string select_cpu_path_from_env();

// One thread's independent FMA chains, `iters` steps, on the path in use: returns the floating
// point operations done (the FMA ceiling of a core, for "% of peak"); the chains' sum goes to
// *sink so that the work cannot be optimised away.
double fma_peak(int64_t iters, float* sink);

}  // namespace graft::cpu
