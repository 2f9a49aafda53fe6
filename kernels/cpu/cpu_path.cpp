// The CPU path in use, and the graft::cpu ops that call through its table. This file is compiled
// once, for the build's own target; the tables come from the per-path builds of kernels/cpu
// (CMakeLists.txt defines GRAFT_CPU_PATH_<NAME> for each path this binary carries).
#include "kernels/cpu/cpu_path.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <mutex>

#include "kernels/cpu/kernel_table.h"

namespace graft::cpu {

#define GRAFT_CPU_DECLARE_TABLE(path) \
  namespace path {                    \
  extern const CpuKernels kernels;    \
  }
#ifdef GRAFT_CPU_PATH_AVX512
GRAFT_CPU_DECLARE_TABLE(avx512)
#endif
#ifdef GRAFT_CPU_PATH_AVX2
GRAFT_CPU_DECLARE_TABLE(avx2)
#endif
#ifdef GRAFT_CPU_PATH_SSE2
GRAFT_CPU_DECLARE_TABLE(sse2)
#endif
#ifdef GRAFT_CPU_PATH_NEON
GRAFT_CPU_DECLARE_TABLE(neon)
#endif
#ifdef GRAFT_CPU_PATH_GENERIC
GRAFT_CPU_DECLARE_TABLE(generic)
#endif
#undef GRAFT_CPU_DECLARE_TABLE

namespace {

const CpuKernels* table_of(CpuPath path) {
  switch (path) {
#ifdef GRAFT_CPU_PATH_AVX512
    case CpuPath::avx512:
      return &avx512::kernels;
#endif
#ifdef GRAFT_CPU_PATH_AVX2
    case CpuPath::avx2:
      return &avx2::kernels;
#endif
#ifdef GRAFT_CPU_PATH_SSE2
    case CpuPath::sse2:
      return &sse2::kernels;
#endif
#ifdef GRAFT_CPU_PATH_NEON
    case CpuPath::neon:
      return &neon::kernels;
#endif
#ifdef GRAFT_CPU_PATH_GENERIC
    case CpuPath::generic:
      return &generic::kernels;
#endif
    default:
      return nullptr;
  }
}

// What the CPU and the operating system offer (__builtin_cpu_supports also checks that the OS
// saves the wide registers). The feature lists match the -m flags CMakeLists.txt compiles each
// path with.
bool cpu_can_run(CpuPath path) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  switch (path) {
    case CpuPath::avx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512cd");
    case CpuPath::avx2:
      return avx2;
    case CpuPath::sse2:
      return true;  // part of x86-64
    default:
      return false;
  }
#elif defined(__aarch64__)
  return path == CpuPath::neon;  // Advanced SIMD is part of ARMv8-A
#else
  return path == CpuPath::generic;
#endif
}

// Every path, best first, with its name (GRAFT_CPU's value) and what it needs of the CPU.
struct PathInfo {
  CpuPath path;
  const char* name;
  const char* needs;
};
constexpr PathInfo kPaths[] = {
    {CpuPath::avx512, "avx512", "AVX-512 (F, BW, DQ, VL, CD) besides AVX2, FMA, BMI1 and BMI2"},
    {CpuPath::avx2, "avx2", "AVX2, FMA, BMI1 and BMI2"},
    {CpuPath::neon, "neon", "an aarch64 CPU"},
    {CpuPath::sse2, "sse2", "an x86-64 CPU"},
    {CpuPath::generic, "generic", "nothing"},
};

const PathInfo& info(CpuPath path) {
  for (const PathInfo& i : kPaths)
    if (i.path == path) return i;
  return kPaths[std::size(kPaths) - 1];
}

std::atomic<const CpuKernels*> g_table{nullptr};
std::atomic<CpuPath> g_path{CpuPath::generic};

std::string names(const std::vector<CpuPath>& paths) {
  std::string s;
  for (CpuPath p : paths) s += (s.empty() ? "" : ", ") + std::string(cpu_path_name(p));
  return s;
}

const CpuKernels& active() {
  const CpuKernels* t = g_table.load(std::memory_order_acquire);
  if (t) return *t;
  static std::once_flag once;
  std::call_once(once, [] {
    if (g_table.load() != nullptr) return;
    const std::string error = select_cpu_path_from_env();
    if (!error.empty()) {
      std::fprintf(stderr, "graft: %s\n", error.c_str());
      std::exit(2);
    }
  });
  return *g_table.load(std::memory_order_acquire);
}

}  // namespace

const char* cpu_path_name(CpuPath path) {
  return info(path).name;
}

const char* cpu_path_needs(CpuPath path) {
  return info(path).needs;
}

std::vector<CpuPath> cpu_paths_built() {
  std::vector<CpuPath> out;
  for (const PathInfo& i : kPaths)
    if (table_of(i.path)) out.push_back(i.path);
  return out;
}

bool cpu_path_supported(CpuPath path) {
  return table_of(path) != nullptr && cpu_can_run(path);
}

std::vector<CpuPath> cpu_paths_supported() {
  std::vector<CpuPath> out;
  for (const PathInfo& i : kPaths)
    if (cpu_path_supported(i.path)) out.push_back(i.path);
  return out;
}

CpuPath cpu_path() {
  active();
  return g_path.load();
}

bool set_cpu_path(CpuPath path) {
  if (!cpu_path_supported(path)) return false;
  g_path.store(path);
  g_table.store(table_of(path), std::memory_order_release);
  return true;
}

std::string select_cpu_path_from_env() {
  const std::vector<CpuPath> supported = cpu_paths_supported();
  const char* env = std::getenv("GRAFT_CPU");
  std::string want = env ? env : "";
  for (char& ch : want) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (supported.empty())
    return "this CPU runs none of this build's CPU paths (" + names(cpu_paths_built()) + ")";
  if (want.empty()) {
    set_cpu_path(supported.front());
    return "";
  }
  for (const PathInfo& i : kPaths) {
    if (want != i.name) continue;
    if (!table_of(i.path))
      return "GRAFT_CPU=" + std::string(env) + ": this build has no " + i.name + " path (it has " +
             names(cpu_paths_built()) + ")";
    if (!cpu_can_run(i.path))
      return "GRAFT_CPU=" + std::string(env) + ": the " + i.name + " path needs " + i.needs +
             ", which this CPU lacks (it can run " + names(supported) + ")";
    set_cpu_path(i.path);
    return "";
  }
  return "GRAFT_CPU=" + std::string(env) + ": no such CPU path (this build has " +
         names(cpu_paths_built()) + ")";
}

#define GRAFT_CPU_FORWARD(ret, name, params, args) \
  ret name params {                                \
    return active().name args;                     \
  }
GRAFT_CPU_OPS(GRAFT_CPU_FORWARD)
#undef GRAFT_CPU_FORWARD

}  // namespace graft::cpu
