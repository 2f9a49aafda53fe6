// Runs a launch: blocks one after another in a shuffled order, each block's threads as fibers that
// run until a barrier or a warp operation, in an order shuffled again after every barrier. A
// barrier opens when every thread still running has reached it; a warp operation completes when
// every lane its mask names has reached one with the same mask. A block whose threads can no
// longer move is a fault (a barrier some thread never reaches, a shuffle mask naming a lane that
// has left), reported and then forced open so the launch still ends.
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <sstream>

#include "kernels/emu/internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define GRAFT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GRAFT_EMU_ASAN 1
#endif
#endif
#ifdef GRAFT_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace graft::emu {

thread_local Thread* g_thread = nullptr;
thread_local const Block* g_block = nullptr;
thread_local const Grid* g_grid = nullptr;

const uint3& thread_idx() {
  return g_thread->idx;
}
const uint3& block_idx() {
  return g_block->idx;
}
const dim3& block_dim() {
  return g_grid->block;
}
const dim3& grid_dim() {
  return g_grid->grid;
}

namespace {

namespace ctx = boost::context;

// AddressSanitizer keeps a shadow of each stack; it has to be told when execution moves to
// another one, or it takes the fiber's frames for overflows of the scheduler's stack.
const void* g_sched_stack = nullptr;
size_t g_sched_stack_size = 0;
void start_switch([[maybe_unused]] void** fake, [[maybe_unused]] const void* bottom,
                  [[maybe_unused]] size_t size) {
#ifdef GRAFT_EMU_ASAN
  __sanitizer_start_switch_fiber(fake, bottom, size);
#endif
}
void finish_switch([[maybe_unused]] void* fake, [[maybe_unused]] const void** bottom,
                   [[maybe_unused]] size_t* size) {
#ifdef GRAFT_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, bottom, size);
#endif
}

// Fiber stacks, reused from block to block: a thread that finishes without waiting gives its stack
// to the next, so a kernel without barriers needs one. Kernels keep small register tiles on the
// stack; 256 KB leaves room for AddressSanitizer's larger frames. Each stack keeps the fake stack
// AddressSanitizer gave the last fiber that ran on it (its use-after-return check puts frames
// there): handed on to the next fiber, so that ASan does not map and unmap one per thread, which
// made the sanitized emulation thirty times slower.
constexpr size_t kStackBytes = 256 * 1024;
struct FiberStack {
  void* base = nullptr;
  void* fake = nullptr;  // AddressSanitizer's fake stack, or null
};
struct StackPool {
  std::vector<FiberStack> free;
  FiberStack get() {
    if (!free.empty()) {
      FiberStack s = free.back();
      free.pop_back();
      return s;
    }
    void* s =
        mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
      std::fprintf(stderr, "graft emulation: cannot map a fiber stack\n");
      std::abort();
    }
    return {s, nullptr};
  }
  void put(FiberStack s) { free.push_back(s); }
};
StackPool g_stacks;

// The stack allocator Boost.Context asks for: hands out a stack from the pool; the pool keeps it.
struct PoolStack {
  void* base;
  ctx::stack_context allocate() {
    ctx::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = static_cast<char*>(base) + kStackBytes;
    return sc;
  }
  void deallocate(ctx::stack_context&) noexcept {}
};

const std::function<void()>* g_body = nullptr;

ctx::fiber thread_main(Thread* t, ctx::fiber&& caller) {
  finish_switch(t->fake_stack, &g_sched_stack, &g_sched_stack_size);
  t->caller = std::move(caller);
  (*g_body)();
  t->state = State::done;
  // Keeps this fiber's fake stack (every frame on it has returned) for the stack's next fiber.
  start_switch(&t->fake_stack, g_sched_stack, g_sched_stack_size);
  return std::move(t->caller);
}

// Called on a thread's fiber: hands control back to the scheduler until it resumes this thread.
void yield(State s) {
  Thread* t = g_thread;
  t->state = s;
  start_switch(&t->fake_stack, g_sched_stack, g_sched_stack_size);
  t->caller = std::move(t->caller).resume();
  finish_switch(t->fake_stack, nullptr, nullptr);
}

void resume(Thread& t) {
  g_thread = &t;
  if (!t.started) {
    t.started = true;
    const FiberStack fs = g_stacks.get();
    t.stack = fs.base;
    t.fake_stack = fs.fake;
    t.fiber = ctx::fiber(std::allocator_arg, PoolStack{t.stack},
                         [&t](ctx::fiber&& c) { return thread_main(&t, std::move(c)); });
  }
  void* fake = nullptr;
  start_switch(&fake, t.stack, kStackBytes);
  t.fiber = std::move(t.fiber).resume();
  finish_switch(fake, nullptr, nullptr);
  g_thread = nullptr;
  if (t.state == State::done) {
    g_stacks.put({t.stack, t.fake_stack});
    t.stack = t.fake_stack = nullptr;
  }
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
template <class T>
void shuffle(std::vector<T>& v, uint64_t& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[splitmix(rng) % i]);
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}
std::string xyz(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
const char* op_name(WarpOpKind k) {
  switch (k) {
    case WarpOpKind::shfl:
      return "__shfl_sync";
    case WarpOpKind::shfl_up:
      return "__shfl_up_sync";
    case WarpOpKind::shfl_down:
      return "__shfl_down_sync";
    case WarpOpKind::shfl_xor:
      return "__shfl_xor_sync";
    case WarpOpKind::ballot:
      return "__ballot_sync";
    case WarpOpKind::any:
      return "__any_sync";
    case WarpOpKind::all:
      return "__all_sync";
    case WarpOpKind::sync:
      return "__syncwarp";
  }
  return "?";
}

// The lane a shuffle reads, within the lane's segment of `width` lanes (its own value when the
// source falls outside the segment, as the hardware's clamp does).
int source_lane(const Thread& t) {
  const int w = t.width, seg = t.lane & ~(w - 1), in = t.lane & (w - 1);
  switch (t.op) {
    case WarpOpKind::shfl:
      return seg + (t.arg & (w - 1));
    case WarpOpKind::shfl_up:
      return in >= t.arg ? t.lane - t.arg : t.lane;
    case WarpOpKind::shfl_down:
      return in + t.arg < w ? t.lane + t.arg : t.lane;
    case WarpOpKind::shfl_xor: {
      const int s = t.lane ^ t.arg;
      return (s >= seg && s < seg + w) ? s : t.lane;
    }
    default:
      return t.lane;
  }
}

struct BlockRun {
  const Grid& grid;
  Block& block;
  std::vector<Thread>& threads;
  std::vector<uint32_t>& warp_syncs;
  uint64_t rng;
  std::vector<int> ready;

  Thread* lane_thread(int warp, int lane) {
    const int i = warp * kWarp + lane;
    return i < grid.threads ? &threads[i] : nullptr;
  }

  // Completes the group of lanes in `t`'s warp that wait with `t`'s mask, if all have arrived.
  // Returns a description of what blocks it otherwise.
  std::string try_complete(Thread& t) {
    const unsigned mask = t.mask;
    for (int l = 0; l < kWarp; ++l) {
      if (!(mask >> l & 1)) continue;
      Thread* o = lane_thread(t.warp, l);
      if (!o) return "names lane " + std::to_string(l) + ", which this block does not have";
      if (o->state == State::done) return "names lane " + std::to_string(l) + ", which has exited";
      if (o->state == State::barrier)
        return "names lane " + std::to_string(l) + ", which waits at __syncthreads";
      if (o->state != State::warp) return "wait";
      if (o->mask != mask || o->op != t.op)
        return "names lane " + std::to_string(l) + ", which waits at " + op_name(o->op) +
               " with mask " + hex(o->mask);
    }
    complete(t.warp, mask, false);
    return {};
  }

  // Delivers every lane's result. `forced`: the group is incomplete (a fault already reported);
  // lanes that are missing give their own value.
  void complete(int warp, unsigned mask, bool forced) {
    unsigned ballot = 0;
    for (int l = 0; l < kWarp; ++l) {
      Thread* o = lane_thread(warp, l);
      if ((mask >> l & 1) && o && o->state == State::warp && o->value) ballot |= 1u << l;
    }
    for (int l = 0; l < kWarp; ++l) {
      Thread* o = lane_thread(warp, l);
      if (!(mask >> l & 1) || !o || o->state != State::warp) continue;
      switch (o->op) {
        case WarpOpKind::ballot:
          o->result = ballot;
          break;
        case WarpOpKind::any:
          o->result = ballot != 0;
          break;
        case WarpOpKind::all:
          o->result = (ballot & mask) == mask;
          break;
        case WarpOpKind::sync:
          o->result = 0;
          break;
        default: {
          const int src = source_lane(*o);
          Thread* s = lane_thread(warp, src);
          if (!(mask >> src & 1) || !s || s->state != State::warp) {
            if (!forced)
              fault(cudaErrorIllegalInstruction,
                    std::string(op_name(o->op)) + " in lane " + std::to_string(l) + " reads lane " +
                        std::to_string(src) + ", which its mask " + hex(mask) + " leaves out");
            o->result = o->value;
          } else {
            o->result = s->value;
          }
        }
      }
    }
    for (int l = 0; l < kWarp; ++l) {
      Thread* o = lane_thread(warp, l);
      if ((mask >> l & 1) && o && o->state == State::warp) {
        o->state = State::ready;
        ready.push_back(o->linear);
      }
    }
    if (warp < int(warp_syncs.size())) ++warp_syncs[warp];
  }

  // After a pass: completes the warp operations whose lanes have all arrived. Returns the first
  // obstacle found, for the deadlock report.
  std::string resolve_warps() {
    std::string obstacle;
    for (Thread& t : threads) {
      if (t.state != State::warp) continue;
      std::string why = try_complete(t);
      if (!why.empty() && why != "wait" && obstacle.empty())
        obstacle = "thread " + xyz(t.idx) + " at " + op_name(t.op) + " with mask " + hex(t.mask) +
                   ": the mask " + why;
    }
    return obstacle;
  }

  void run() {
    ready.resize(threads.size());
    std::iota(ready.begin(), ready.end(), 0);
    std::vector<int> pass;
    while (!ready.empty()) {
      pass.swap(ready);
      ready.clear();
      shuffle(pass, rng);
      for (int i : pass) resume(threads[i]);
      std::string obstacle = resolve_warps();
      if (!ready.empty()) continue;
      int live = 0, at_barrier = 0;
      for (Thread& t : threads) {
        live += t.state != State::done;
        at_barrier += t.state == State::barrier;
      }
      if (live == 0) return;
      if (at_barrier == live) {
        block.epoch = next_epoch();
        for (Thread& t : threads) {
          t.state = State::ready;
          ready.push_back(t.linear);
        }
        continue;
      }
      // Nobody can move: report, then force every waiting thread on so the launch ends.
      if (obstacle.empty())
        obstacle = std::to_string(at_barrier) + " of " + std::to_string(live) +
                   " running threads wait at __syncthreads, the others at warp operations";
      fault(cudaErrorLaunchFailure, "deadlock: " + obstacle);
      for (Thread& t : threads)
        if (t.state == State::warp) complete(t.warp, t.mask, true);
      if (ready.empty())
        for (Thread& t : threads)
          if (t.state == State::barrier) {
            t.state = State::ready;
            ready.push_back(t.linear);
          }
      block.epoch = next_epoch();
    }
  }
};

std::mutex g_launch_mutex;  // static shared memory and the fiber pool are one per process

// The faults of the running launch: the first is reported in full, the rest counted.
struct LaunchFaults {
  cudaError_t err = cudaSuccess;
  std::string first;
  long more = 0;
};
LaunchFaults* g_faults = nullptr;

}  // namespace

void fault(cudaError_t err, const std::string& what) {
  if (!g_faults) {
    set_fault(err, what.c_str());
    return;
  }
  if (g_faults->err != cudaSuccess) {
    ++g_faults->more;
    return;
  }
  g_faults->err = err;
  std::ostringstream msg;
  msg << what << " [kernel " << g_grid->name << ", block " << xyz(g_block->idx);
  if (g_thread) msg << ", thread " << xyz(g_thread->idx);
  msg << ", emulation seed " << g_grid->seed << "]";
  g_faults->first = msg.str();
}

void misaligned(const void* p, size_t align) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "misaligned %zu-byte access at %p", align, p);
  fault(cudaErrorMisalignedAddress, buf);
}

void syncthreads() {
  if (!g_thread) return;  // host code: nothing to wait for
  yield(State::barrier);
}

uint64_t warp_op(WarpOpKind kind, unsigned mask, uint64_t value, int arg, int width) {
  Thread* t = g_thread;
  if (!t) return value;
  if (width <= 0 || width > kWarp || (width & (width - 1))) {
    fault(cudaErrorIllegalInstruction, std::string(op_name(kind)) + " with width " +
                                           std::to_string(width) + " (a power of two to 32)");
    return value;
  }
  if (!(mask >> t->lane & 1)) {
    fault(cudaErrorIllegalInstruction, std::string(op_name(kind)) + " in lane " +
                                           std::to_string(t->lane) + " with mask " + hex(mask) +
                                           ", which leaves that lane out");
    return value;
  }
  t->op = kind;
  t->mask = mask;
  t->value = value;
  t->arg = arg;
  t->width = width;
  yield(State::warp);
  return t->result;
}

void run_grid(const Grid& grid, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  LaunchFaults faults;
  g_faults = &faults;
  g_grid = &grid;
  g_body = &body;
  race_begin_launch(grid);
  const uint64_t blocks = uint64_t(grid.grid.x) * grid.grid.y * grid.grid.z;
  std::vector<uint64_t> order(blocks);
  std::iota(order.begin(), order.end(), uint64_t{0});
  uint64_t rng = grid.seed;
  shuffle(order, rng);

  const int warps = (grid.threads + kWarp - 1) / kWarp;
  std::vector<Thread> threads(grid.threads);
  std::vector<uint32_t> warp_syncs(warps);
  void* dyn = nullptr;
  if (posix_memalign(&dyn, 128, std::max<size_t>(grid.dynamic_bytes, 1)) != 0) std::abort();
  set_dynamic_shared(static_cast<char*>(dyn), grid.dynamic_bytes);
  for (uint64_t b : order) {
    Block block;
    block.idx = uint3{unsigned(b % grid.grid.x), unsigned(b / grid.grid.x % grid.grid.y),
                      unsigned(b / (uint64_t(grid.grid.x) * grid.grid.y))};
    block.epoch = next_epoch();
    block.warp_syncs = &warp_syncs;
    g_block = &block;
    poison_shared(grid.dynamic_bytes);
    for (int i = 0; i < grid.threads; ++i) {
      Thread& t = threads[i];
      t = Thread{};
      t.linear = i;
      t.idx = uint3{unsigned(i % grid.block.x), unsigned(i / grid.block.x % grid.block.y),
                    unsigned(i / (grid.block.x * grid.block.y))};
      t.warp = i / kWarp;
      t.lane = i % kWarp;
    }
    std::fill(warp_syncs.begin(), warp_syncs.end(), 0);
    BlockRun run{grid, block, threads, warp_syncs, grid.seed ^ (b * 0x9E3779B97F4A7C15ull), {}};
    run.run();
  }
  set_dynamic_shared(nullptr, 0);
  std::free(dyn);
  g_block = nullptr;
  g_grid = nullptr;
  g_body = nullptr;
  g_faults = nullptr;
  if (faults.err != cudaSuccess) {
    if (faults.more) faults.first += " (and " + std::to_string(faults.more) + " more faults)";
    std::fprintf(stderr, "graft emulation: %s\n", faults.first.c_str());
    set_fault(faults.err, faults.first.c_str());
  }
}

}  // namespace graft::emu
