// Shared memory of the running block, and the race check on it: what compute-sanitizer's racecheck
// reports. With clang, the kernel files are compiled with -fsanitize-coverage=trace-loads,
// trace-stores, which calls the hooks at the bottom before every load and store they make. An
// access to shared memory is checked against the others since the block's last barrier, word by
// word: two threads touching one word, one of them writing, with no barrier between (nor a
// __syncwarp, for two lanes of one warp), is a hazard.
#include <cstdio>
#include <cstring>

#include "kernels/emu/internal.h"

// The linker's bounds of the section that holds every block-scope __shared__ array.
extern "C" char __start_graft_shared[] __attribute__((weak));
extern "C" char __stop_graft_shared[] __attribute__((weak));

namespace graft::emu {
namespace {

constexpr int32_t kNobody = -1, kSeveral = -2;

// Who touched one 4-byte word of shared memory in the current barrier interval (`epoch`).
struct Word {
  uint64_t epoch = 0;
  int32_t writer = kNobody, reader = kNobody;   // thread indices, or kSeveral readers
  uint32_t writer_syncs = 0, reader_syncs = 0;  // the warp's __syncwarp count at the access
};

uint64_t g_epoch = 0;
char* g_dyn = nullptr;
size_t g_dyn_bytes = 0;
std::vector<Word> g_static_words, g_dyn_words;

const char* kind_name(bool first_write, bool second_write) {
  if (first_write && second_write) return "write after write";
  return first_write ? "read after write" : "write after read";
}

// Whether thread `a`'s access, made when its warp had completed `syncs` __syncwarp calls, is
// ordered before the running thread's by a __syncwarp of their common warp.
bool warp_ordered(int32_t a, uint32_t syncs) {
  const Thread* t = g_thread;
  if (a / kWarp != t->warp) return false;
  return (*g_block->warp_syncs)[t->warp] > syncs;
}

void report(const char* region, size_t offset, int32_t other, bool other_write, bool write) {
  const Grid& g = *g_grid;
  const uint3 o{unsigned(other % g.block.x), unsigned(other / g.block.x % g.block.y),
                unsigned(other / (g.block.x * g.block.y))};
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "shared-memory race (%s) on the word at byte %zu of %s shared memory: thread "
                "(%u,%u,%u) %s it with no barrier between",
                kind_name(other_write, write), offset, region, o.x, o.y, o.z,
                other == kSeveral ? "and others read" : (other_write ? "wrote" : "read"));
  fault(cudaErrorLaunchFailure, buf);
}

void check_word(Word& w, const char* region, size_t offset, bool write) {
  const Thread* t = g_thread;
  const int32_t me = t->linear;
  const uint32_t syncs = (*g_block->warp_syncs)[t->warp];
  if (w.epoch != g_block->epoch) w = Word{g_block->epoch};
  if (w.writer != kNobody && w.writer != me && !warp_ordered(w.writer, w.writer_syncs)) {
    report(region, offset, w.writer, true, write);
    w.writer = kNobody;  // one report per conflict
  }
  if (write) {
    if (w.reader == kSeveral ||
        (w.reader != kNobody && w.reader != me && !warp_ordered(w.reader, w.reader_syncs))) {
      report(region, offset, w.reader == kSeveral ? kSeveral : w.reader, false, true);
      w.reader = kNobody;
    }
    w.writer = me;
    w.writer_syncs = syncs;
  } else if (w.reader == kNobody) {
    w.reader = me;
    w.reader_syncs = syncs;
  } else if (w.reader != me && !warp_ordered(w.reader, w.reader_syncs)) {
    w.reader = kSeveral;
  }
}

void on_access(const void* p, size_t size, bool write) {
  if (!g_thread) return;  // host code in a kernel file
  const char* a = static_cast<const char*>(p);
  std::vector<Word>* words;
  size_t off;
  const char* region;
  if (a >= __start_graft_shared && a < __stop_graft_shared) {
    words = &g_static_words;
    off = size_t(a - __start_graft_shared);
    region = "static";
  } else if (a >= g_dyn && a < g_dyn + g_dyn_bytes) {
    words = &g_dyn_words;
    off = size_t(a - g_dyn);
    region = "dynamic";
  } else {
    return;
  }
  for (size_t i = off / 4; i <= (off + size - 1) / 4 && i < words->size(); ++i)
    check_word((*words)[i], region, i * 4, write);
}

}  // namespace

void* dynamic_shared() {
  return g_dyn;
}

void set_dynamic_shared(char* p, size_t bytes) {
  g_dyn = p;
  g_dyn_bytes = bytes;
  if (g_dyn_words.size() < (bytes + 3) / 4) g_dyn_words.resize((bytes + 3) / 4);
}

SharedRange static_shared() {
  return {__start_graft_shared, __stop_graft_shared};
}

// NaN in every float (-1 in every integer), so a read of shared memory this block has not written
// shows, instead of the previous block's values.
void poison_shared(size_t dynamic_bytes) {
  const SharedRange s = static_shared();
  if (s.begin && s.end > s.begin) std::memset(s.begin, 0xFF, size_t(s.end - s.begin));
  if (g_dyn && dynamic_bytes) std::memset(g_dyn, 0xFF, dynamic_bytes);
}

uint64_t next_epoch() {
  return ++g_epoch;
}

void race_begin_launch(const Grid&) {
  const SharedRange s = static_shared();
  const size_t words = s.begin ? size_t(s.end - s.begin + 3) / 4 : 0;
  if (g_static_words.size() < words) g_static_words.resize(words);
}

}  // namespace graft::emu

// SanitizerCoverage's load and store hooks (clang's -fsanitize-coverage=trace-loads,trace-stores),
// called only from the kernel files, which are the only ones built with them.
extern "C" {
void __sanitizer_cov_load1(uint8_t* p) {
  graft::emu::on_access(p, 1, false);
}
void __sanitizer_cov_load2(uint16_t* p) {
  graft::emu::on_access(p, 2, false);
}
void __sanitizer_cov_load4(uint32_t* p) {
  graft::emu::on_access(p, 4, false);
}
void __sanitizer_cov_load8(uint64_t* p) {
  graft::emu::on_access(p, 8, false);
}
void __sanitizer_cov_load16(__int128* p) {
  graft::emu::on_access(p, 16, false);
}
void __sanitizer_cov_store1(uint8_t* p) {
  graft::emu::on_access(p, 1, true);
}
void __sanitizer_cov_store2(uint16_t* p) {
  graft::emu::on_access(p, 2, true);
}
void __sanitizer_cov_store4(uint32_t* p) {
  graft::emu::on_access(p, 4, true);
}
void __sanitizer_cov_store8(uint64_t* p) {
  graft::emu::on_access(p, 8, true);
}
void __sanitizer_cov_store16(__int128* p) {
  graft::emu::on_access(p, 16, true);
}
// The coverage counters that the hooks come with: not used.
void __sanitizer_cov_8bit_counters_init(char*, char*) {}
}
