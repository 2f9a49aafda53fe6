// The emulated CUDA device (kernels/emu) reports what a GPU run or compute-sanitizer would: each
// test runs a kernel written wrong on purpose (tests/emulation_planted.cu) and expects the fault,
// and runs its correct twin and expects none, so a check that reports everything fails too.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "tests/cuda_test_util.h"
#include "tests/emulation_planted.h"

// Whether this build runs under AddressSanitizer (gcc says so one way, clang another).
#if defined(__SANITIZE_ADDRESS__)
#define GRAFT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GRAFT_TEST_ASAN 1
#endif
#endif

namespace graft {
namespace {

using test::DeviceBuffer;

std::string last_message(cudaError_t err) {
  return cudaGetErrorString(err);
}

std::vector<float> iota_floats(size_t n, float from = 1.f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = from + float(i);
  return v;
}

// memcheck: a read one element past the end of a cudaMalloc block, or past the launch's dynamic
// shared memory. Each is a host block of its own, so AddressSanitizer (scripts/sanitize.sh) stops
// the process there.
TEST(Emulation, ReadPastAllocationIsCaughtByAddressSanitizer) {
#if GRAFT_TEST_ASAN
  DeviceBuffer<float> x(iota_floats(100)), y(100);
  EXPECT_EQ(planted::shifted_copy(100, 0, x.get(), y.get()), cudaSuccess);
  EXPECT_DEATH(planted::shifted_copy(100, 1, x.get(), y.get()), "heap-buffer-overflow");
  // Dynamic shared memory is a block of exactly the launch's size too: 64 threads, 32 floats.
  ASSERT_EQ(planted::dynamic_shared(32, 32, 32 * sizeof(float), y.get()), cudaSuccess);
  EXPECT_DEATH(planted::dynamic_shared(64, 64, 32 * sizeof(float), y.get()),
               "heap-buffer-overflow");
#else
  GTEST_SKIP() << "needs an AddressSanitizer build (scripts/sanitize.sh builds one)";
#endif
}

// A float4 load from an address that is not a multiple of 16 faults on a GPU.
TEST(Emulation, MisalignedFloat4IsAFault) {
  DeviceBuffer<float> x(iota_floats(8)), y(1);
  ASSERT_EQ(planted::float4_sum(x.get(), 4, y.get()), cudaSuccess);
  EXPECT_EQ(y.download()[0], 5.f + 6.f + 7.f + 8.f);
  const cudaError_t err = planted::float4_sum(x.get(), 1, y.get());
  EXPECT_EQ(err, cudaErrorMisalignedAddress);
  EXPECT_NE(last_message(err).find("float4_sum_kernel"), std::string::npos) << last_message(err);
}

// racecheck: a missing __syncthreads between a shared-memory write and another thread's read.
TEST(Emulation, MissingBarrierIsARace) {
#if GRAFT_EMU_RACECHECK
  DeviceBuffer<float> x(iota_floats(3 * 96)), y(3 * 96);
  y.poison();
  ASSERT_EQ(planted::rotate(true, 3, 96, x.get(), y.get()), cudaSuccess);
  const auto got = y.download();
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 96; ++t) EXPECT_EQ(got[b * 96 + t], float(b * 96 + (t + 1) % 96 + 1));
  const cudaError_t err = planted::rotate(false, 3, 96, x.get(), y.get());
  EXPECT_EQ(err, cudaErrorLaunchFailure);
  const std::string msg = last_message(err);
  EXPECT_NE(msg.find("shared-memory race"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rotate_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("emulation seed"), std::string::npos) << msg;
#else
  GTEST_SKIP() << "the shared-memory race check needs the kernels built with clang";
#endif
}

// Without the race check's report, the shuffled thread order alone shows the missing barrier:
// threads run in a random order, so some read their neighbour's slot before it is written (NaN,
// since shared memory starts each block as NaN).
TEST(Emulation, MissingBarrierReadsNaNUnderShuffledOrder) {
  DeviceBuffer<float> x(iota_floats(4 * 128)), y(4 * 128);
  (void)planted::rotate(false, 4, 128, x.get(), y.get());
  const auto got = y.download();
  int nan = 0;
  for (float v : got) nan += std::isnan(v);
  EXPECT_GT(nan, 0) << "every thread happened to run after its neighbour";
  EXPECT_LT(nan, int(got.size())) << "no thread ran after its neighbour";
}

// Shared memory starts every block as NaN, not as what the last block left there.
TEST(Emulation, SharedMemoryStartsAsNaN) {
  DeviceBuffer<float> y(3 * 64);
  ASSERT_EQ(planted::stale_shared(3, y.get()), cudaSuccess);
  const auto got = y.download();
  int ones = 0, nan = 0;
  for (float v : got) ones += v == 1.f, nan += std::isnan(v);
  EXPECT_EQ(ones, 64);
  EXPECT_EQ(nan, 2 * 64);
  DeviceBuffer<float> z(64);
  ASSERT_EQ(planted::dynamic_shared(64, 10, 64 * sizeof(float), z.get()), cudaSuccess);
  const auto dz = z.download();
  for (int t = 0; t < 64; ++t) {
    if (t < 10)
      EXPECT_EQ(dz[t], float(t));
    else
      EXPECT_TRUE(std::isnan(dz[t])) << t;
  }
}

// cudaMalloc'd memory starts as NaN, so a kernel reading what nobody wrote shows it.
TEST(Emulation, DeviceMemoryStartsAsNaN) {
  DeviceBuffer<float> x(64), y(64);
  ASSERT_EQ(planted::shifted_copy(64, 0, x.get(), y.get()), cudaSuccess);
  for (float v : y.download()) EXPECT_TRUE(std::isnan(v));
}

TEST(Emulation, WarpShufflesAndBallot) {
  std::mt19937 rng(5);
  const auto xs = test::random_floats(32, rng);
  DeviceBuffer<float> x(xs), y(32), down(32), up(32), bcast(32);
  DeviceBuffer<unsigned> ballot(1);
  ASSERT_EQ(planted::warp_sum(0xffffffffu, x.get(), y.get()), cudaSuccess);
  double sum = 0;
  for (float v : xs) sum += v;
  for (float v : y.download()) EXPECT_NEAR(v, sum, 1e-5);
  ASSERT_EQ(planted::warp_ops(x.get(), ballot.get(), down.get(), up.get(), bcast.get()),
            cudaSuccess);
  unsigned want = 0;
  for (int l = 0; l < 32; ++l) want |= (xs[l] > 0.f ? 1u : 0u) << l;
  EXPECT_EQ(ballot.download()[0], want);
  const auto d = down.download(), u = up.download(), b = bcast.download();
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(d[l], xs[l + 3 < 32 ? l + 3 : l]) << l;
    EXPECT_EQ(u[l], xs[l >= 3 ? l - 3 : l]) << l;
    EXPECT_EQ(b[l], xs[5]) << l;
  }
}

// A shuffle whose mask leaves out lanes that take part in it.
TEST(Emulation, ShuffleMaskLeavingOutALaneIsAFault) {
  DeviceBuffer<float> x(iota_floats(32)), y(32);
  const cudaError_t err = planted::warp_sum(0x0000ffffu, x.get(), y.get());
  EXPECT_EQ(err, cudaErrorIllegalInstruction);
  EXPECT_NE(last_message(err).find("leaves that lane out"), std::string::npos) << last_message(err);
}

// A full-warp shuffle after some lanes have returned: the mask names lanes that never arrive.
TEST(Emulation, ShuffleWithExitedLanesIsADeadlock) {
  DeviceBuffer<float> y(32);
  ASSERT_EQ(planted::early_exit_shuffle(0, y.get()), cudaSuccess);
  const auto ok = y.download();
  for (int l = 0; l < 32; ++l) EXPECT_EQ(ok[l], float(l ^ 1));
  const cudaError_t err = planted::early_exit_shuffle(4, y.get());
  EXPECT_EQ(err, cudaErrorLaunchFailure);
  EXPECT_NE(last_message(err).find("has exited"), std::string::npos) << last_message(err);
}

// Launch-configuration errors, as CUDA reports them.
TEST(Emulation, BadLaunchConfigurations) {
  DeviceBuffer<float> y(1024);
  EXPECT_EQ(planted::launch_with(dim3(1), dim3(1024), 0, y.get()), cudaSuccess);
  EXPECT_EQ(planted::launch_with(dim3(1), dim3(1025), 0, y.get()), cudaErrorInvalidConfiguration);
  EXPECT_EQ(planted::launch_with(dim3(1), dim3(1, 1, 65), 0, y.get()),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ(planted::launch_with(dim3(0), dim3(32), 0, y.get()), cudaErrorInvalidConfiguration);
  EXPECT_EQ(planted::launch_with(dim3(1, 65536), dim3(32), 0, y.get()),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ(planted::launch_with(dim3(1), dim3(32), 48 * 1024, y.get()), cudaSuccess);
  EXPECT_EQ(planted::launch_with(dim3(1), dim3(32), 48 * 1024 + 4, y.get()), cudaErrorInvalidValue);
}

TEST(Emulation, ConstantMemory) {
  DeviceBuffer<float> y(16);
  const auto table = iota_floats(16, 10.f);
  ASSERT_EQ(planted::constant_read(table.data(), 16, 0, y.get()), cudaSuccess);
  EXPECT_EQ(y.download(), table);
  EXPECT_EQ(planted::constant_read(table.data(), 16, 1, y.get()), cudaErrorInvalidValue);
}

// The same seed gives the same block and thread order; GRAFT_EMU_SEED chooses it.
TEST(Emulation, DeviceIsNamedAsEmulated) {
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_NE(std::string(prop.name).find("emulation"), std::string::npos);
  EXPECT_EQ(prop.major, 9);
}

}  // namespace
}  // namespace graft
