#pragma once
// Host-side helpers shared by the op tests: seeded random data, NaN-poisoned outputs, the relative
// L2 error every tolerance in these tests is stated in, and bitwise comparison for the ops that
// promise repeatable results.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace graft::test {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Uniform in [-scale, scale), the same values for the same seed.
inline std::vector<float> random_vec(size_t count, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(count);
  for (float& f : v) f = dist(rng);
  return v;
}

// An output buffer full of NaN: an element the op never writes fails the comparison.
inline std::vector<float> poisoned(size_t count) {
  return std::vector<float>(count, kNaN);
}

// ||got - want|| / ||want|| in double. NaN anywhere in `got` makes the result NaN, which fails
// every `< tol` check.
inline double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// GRAFT_TEST_SHAPES=small keeps only the cases of at most kSmallRunElements elements (inputs and
// outputs together): a run under compute-sanitizer racecheck, whose cost grows with every
// shared-memory access, can then finish in about a minute. Every list keeps some small cases, so
// every kernel still runs; the full lists remain what the suite checks.
constexpr size_t kSmallRunElements = size_t(1) << 18;

inline bool small_run() {
  static const bool small = [] {
    const char* v = std::getenv("GRAFT_TEST_SHAPES");
    return v && std::strcmp(v, "small") == 0;
  }();
  return small;
}

inline bool skip_in_small_run(size_t elements) {
  return small_run() && elements > kSmallRunElements;
}

}  // namespace graft::test
