#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based RNG. The random number for a counter is a pure function of (key, counter), so the
// CPU twin and the CUDA kernel draw identical dropout masks no matter how work is split.
#include <cstdint>

#if defined(__CUDACC__)
#define GRAFT_HD __host__ __device__ __forceinline__
#else
#define GRAFT_HD inline
#endif

namespace graft {

struct Philox4 {
  uint32_t v[4];
};

GRAFT_HD uint32_t philox_mulhi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// One block of four 32-bit outputs for a 64-bit block counter and a 64-bit key.
GRAFT_HD Philox4 philox4x32_10(uint64_t counter, uint64_t key) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t lo0 = 0xD2511F53u * c0, hi0 = philox_mulhi(0xD2511F53u, c0);
    uint32_t lo1 = 0xCD9E8D57u * c2, hi1 = philox_mulhi(0xCD9E8D57u, c2);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform float in [0, 1) for element `index` of the stream `seed`: four elements share one block.
GRAFT_HD float philox_uniform(uint64_t seed, uint64_t index) {
  Philox4 r = philox4x32_10(index >> 2, seed);
  return static_cast<float>(r.v[index & 3] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace graft
