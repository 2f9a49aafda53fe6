#pragma once
// What the emulation's own files share: the running thread, block and grid, fault reports and the
// shared-memory race check. Not seen by kernels.
#include <boost/context/fiber.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/emu/cuda_emulation.h"

namespace graft::emu {

constexpr int kWarp = 32;
constexpr int kMaxThreadsPerBlock = 1024;
// H100's limits: 48 KB of shared memory a block without opting in (graft never opts in), 227 KB
// with; 132 SMs.
constexpr size_t kSharedPerBlock = 48 * 1024;
constexpr size_t kSharedOptin = 227 * 1024;
constexpr int kSmCount = 132;

enum class State { ready, barrier, warp, done };

struct Thread {
  uint3 idx{};
  int linear = 0, warp = 0, lane = 0;
  State state = State::ready;
  bool started = false;
  boost::context::fiber fiber;   // the suspended thread, while it waits at a barrier or warp op
  boost::context::fiber caller;  // the scheduler, while this thread runs
  void* stack = nullptr;
  void* fake_stack = nullptr;  // AddressSanitizer's bookkeeping for this fiber
  // The warp operation this thread waits at, and its result.
  WarpOpKind op = WarpOpKind::sync;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = kWarp;
};

struct Grid {
  const char* name = "";
  dim3 grid, block;
  size_t dynamic_bytes = 0;
  uint64_t seed = 0;
  int threads = 0;
};

struct Block {
  uint3 idx{};
  uint64_t epoch = 0;                 // advances at every barrier (and every block): race check
  std::vector<uint32_t>* warp_syncs;  // per warp: how many __syncwarp it has completed
};

// Runs a launch to its end on the calling host thread (scheduler.cpp).
void run_grid(const Grid& grid, const std::function<void()>& body);

// A fault found while the kernel runs: reported once per launch, returned by the next API call.
void fault(cudaError_t err, const std::string& what);

// The running block's shared memory: static (the graft_shared section) and dynamic.
struct SharedRange {
  char* begin = nullptr;
  char* end = nullptr;
};
SharedRange static_shared();
void set_dynamic_shared(char* p, size_t bytes);  // the running launch's buffer
void poison_shared(size_t dynamic_bytes);

// Race check: a new block, a barrier, and the check on one access (racecheck.cpp).
void race_begin_launch(const Grid& grid);
uint64_t next_epoch();

// A fault of a finished launch: the last error, also returned by the next synchronising call.
void set_fault(cudaError_t err, const char* detail);

// The seed of the next launch's block and thread order (runtime.cpp).
uint64_t launch_seed();

}  // namespace graft::emu
