// Linked into the CPU kernel tests, which ctest runs once per CPU path (GRAFT_CPU=<path>, see
// tests/CMakeLists.txt): selects that path before any test, and skips every test when this
// machine's CPU cannot run it. A GRAFT_CPU this build does not know fails instead.
#include <gtest/gtest.h>

#include <string>

#include "kernels/cpu/cpu_path.h"

namespace {

class CpuPathEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string error = graft::cpu::select_cpu_path_from_env();
    if (error.find("which this CPU lacks") != std::string::npos)
      GTEST_SKIP() << "CPU path skipped: " << error;
    ASSERT_EQ(error, "");
    std::printf("CPU path: %s\n", graft::cpu::cpu_path_name(graft::cpu::cpu_path()));
  }
};

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new CpuPathEnvironment);

}  // namespace
