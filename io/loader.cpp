#include "io/loader.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>

namespace graft {

namespace {

using Clock = std::chrono::steady_clock;

// How often waiters look at LoaderConfig::cancel: a signal handler cannot notify a condition
// variable, so the flag is polled while anyone is blocked.
constexpr auto kCancelPoll = std::chrono::milliseconds(10);

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr size_t kSlotAlign = 64;

void* default_alloc(size_t bytes) {
  // aligned_alloc wants a size that is a multiple of the alignment.
  return std::aligned_alloc(kSlotAlign, (bytes + kSlotAlign - 1) / kSlotAlign * kSlotAlign);
}

void default_release(void* p) {
  std::free(p);
}

}  // namespace

// One batch buffer of the ring and the bookkeeping of the batch being written into it.
struct Slot {
  uint8_t* pixels = nullptr;
  // The batch whose items may be written here now: slot k serves batches k, k + slots, ...; it
  // moves on by `slots` when the consumer releases the previous one.
  int64_t writable_batch = 0;
  bool held = false;                  // handed out by loader_next and not yet released
  int done = 0;                       // items of writable_batch finished, decoded or failed
  std::vector<char> ok;               // per position in the batch
  std::vector<std::string> messages;  // the error of each failed position
  LoaderStats stats;                  // of writable_batch so far
  LoaderBatch batch;                  // what loader_next hands out
};

struct LoaderState {
  LoaderConfig cfg;
  size_t image_bytes = 0;
  std::vector<Slot> slots;
  std::vector<std::thread> workers;

  // Everything below is guarded by m. Workers write pixels outside the lock, each into its own
  // position of a slot that no one else touches until the batch is complete.
  std::mutex m;
  std::condition_variable work_cv;  // workers: new epoch, slot released, cancel, stop
  std::condition_variable done_cv;  // consumer: batch complete, a worker went idle, cancel
  std::vector<LoaderItem> items;
  int64_t next_item = 0;
  int64_t next_batch = 0;
  int64_t n_batches = 0;
  int busy = 0;  // workers between claiming an item and finishing or abandoning it
  bool cancelled = false;
  bool stopping = false;
  LoaderStats epoch_stats;

  ~LoaderState() {
    join_workers();
    for (Slot& s : slots)
      if (s.pixels) (cfg.release ? cfg.release : default_release)(s.pixels);
  }

  void join_workers() {
    {
      std::lock_guard<std::mutex> lk(m);
      stopping = true;
    }
    work_cv.notify_all();
    done_cv.notify_all();
    for (std::thread& t : workers) t.join();
    workers.clear();
  }

  // True once the epoch must end early. Latches the caller's flag, so that everyone sees the
  // same answer until the next epoch even if the flag is cleared meanwhile. Call with m held.
  bool halted() {
    if (!cancelled && cfg.cancel && cfg.cancel->load(std::memory_order_relaxed)) {
      cancelled = true;
      work_cv.notify_all();
      done_cv.notify_all();
    }
    return cancelled || stopping;
  }

  // cv.wait that also notices the caller's cancel flag, which nobody notifies for.
  template <typename Ready>
  void wait(std::unique_lock<std::mutex>& lk, std::condition_variable& cv, Ready ready) {
    while (!ready()) {
      if (cfg.cancel)
        cv.wait_for(lk, kCancelPoll);
      else
        cv.wait(lk);
    }
  }

  int items_in_batch(int64_t b) const {
    return int(std::min<int64_t>(cfg.batch, int64_t(items.size()) - b * cfg.batch));
  }
};

namespace {

void decode_item(const LoaderConfig& cfg, const LoaderItem& item, uint8_t* dst) {
  const Image img = load_image_for(*item.path, cfg.pre, cfg.limits);
  if (cfg.augment)
    cfg.augment(img, cfg.pre, item.aug_key, dst);
  else
    preprocess_image(img, cfg.pre, dst);
}

// Decodes one item into its position; returns the error message, empty on success. Never
// throws: a bad file must not take the worker (and the process) down.
std::string decode_item_noexcept(const LoaderConfig& cfg, const LoaderItem& item, uint8_t* dst) {
  try {
    decode_item(cfg, item, dst);
    return {};
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return *item.path + ": unknown error";
  }
}

void worker_main(LoaderState& s) {
  std::unique_lock<std::mutex> lk(s.m);
  for (;;) {
    s.work_cv.wait(
        lk, [&] { return s.stopping || (s.next_item < int64_t(s.items.size()) && !s.halted()); });
    if (s.stopping) return;

    // Items are claimed in epoch order, so every item of batch b is claimed before any of
    // batch b + slots: waiting for a slot can never starve the batch the consumer waits for.
    const int64_t i = s.next_item++;
    const int64_t b = i / s.cfg.batch;
    const int pos = int(i % s.cfg.batch);
    Slot& slot = s.slots[size_t(b % int64_t(s.slots.size()))];
    ++s.busy;

    const Clock::time_point wait_start = Clock::now();
    s.wait(lk, s.work_cv, [&] { return slot.writable_batch == b || s.halted(); });
    const double waited = seconds_since(wait_start);
    s.epoch_stats.slot_wait_s += waited;
    if (s.halted()) {
      --s.busy;
      s.done_cv.notify_all();  // loader_start_epoch may wait for the workers to go idle
      continue;
    }

    const LoaderItem item = s.items[size_t(i)];
    uint8_t* dst = slot.pixels + size_t(pos) * s.image_bytes;
    lk.unlock();
    const Clock::time_point t0 = Clock::now();
    std::string error = decode_item_noexcept(s.cfg, item, dst);
    const double decode_s = seconds_since(t0);
    lk.lock();

    slot.ok[size_t(pos)] = error.empty();
    slot.messages[size_t(pos)] = std::move(error);
    slot.stats.decode_s += decode_s;
    slot.stats.slot_wait_s += waited;
    s.epoch_stats.decode_s += decode_s;
    --s.busy;
    if (++slot.done == s.items_in_batch(b) || s.busy == 0) s.done_cv.notify_all();
  }
}

// Moves the valid images to the front of the slot, in item order, and fills slot.batch.
void assemble_batch(const LoaderState& s, Slot& slot, int64_t b, int n_items) {
  LoaderBatch& out = slot.batch;
  out.pixels = slot.pixels;
  out.index = int(b);
  out.ids.clear();
  out.errors.clear();
  int valid = 0;
  for (int k = 0; k < n_items; ++k) {
    if (!slot.ok[size_t(k)]) {
      out.errors.push_back(slot.messages[size_t(k)]);
      continue;
    }
    if (valid != k)
      std::memmove(slot.pixels + size_t(valid) * s.image_bytes,
                   slot.pixels + size_t(k) * s.image_bytes, s.image_bytes);
    out.ids.push_back(s.items[size_t(b * s.cfg.batch + k)].id);
    ++valid;
  }
  out.n_valid = valid;
}

void validate(const LoaderConfig& cfg) {
  if (cfg.batch < 1) throw std::invalid_argument("loader: batch must be >= 1");
  if (cfg.threads < 1) throw std::invalid_argument("loader: threads must be >= 1");
  if (cfg.slots < 1) throw std::invalid_argument("loader: slots must be >= 1");
  if (cfg.pre.size < 1) throw std::invalid_argument("loader: preprocess size must be >= 1");
  if ((cfg.alloc == nullptr) != (cfg.release == nullptr))
    throw std::invalid_argument("loader: alloc and release must be given together");
  preprocess_crop_box(cfg.pre.size, cfg.pre.size, cfg.pre);  // throws for a bad resize mode
}

}  // namespace

Loader::Loader() = default;
Loader::~Loader() = default;  // ~LoaderState joins the workers, then frees the slots

size_t loader_image_bytes(const LoaderConfig& cfg) {
  return size_t(cfg.pre.size) * cfg.pre.size * 3;
}

void loader_create(Loader& ld, const LoaderConfig& cfg) {
  validate(cfg);
  ld.state.reset();
  auto s = std::make_unique<LoaderState>();
  s->cfg = cfg;
  s->image_bytes = loader_image_bytes(cfg);
  s->slots.resize(size_t(cfg.slots));
  const size_t slot_bytes = s->image_bytes * size_t(cfg.batch);
  for (size_t k = 0; k < s->slots.size(); ++k) {
    Slot& slot = s->slots[k];
    slot.pixels = static_cast<uint8_t*>((cfg.alloc ? cfg.alloc : default_alloc)(slot_bytes));
    if (!slot.pixels) throw std::bad_alloc();
    slot.writable_batch = int64_t(k);
    slot.ok.assign(size_t(cfg.batch), 0);
    slot.messages.resize(size_t(cfg.batch));
  }
  // If a thread cannot be started, ~LoaderState joins those that were.
  for (int t = 0; t < cfg.threads; ++t) s->workers.emplace_back(worker_main, std::ref(*s));
  ld.state = std::move(s);
}

void loader_start_epoch(Loader& ld, std::vector<LoaderItem> items) {
  if (!ld.state) throw std::logic_error("loader_start_epoch: loader not created");
  for (const LoaderItem& it : items)
    if (!it.path) throw std::invalid_argument("loader_start_epoch: item without a path");
  LoaderState& s = *ld.state;
  std::unique_lock<std::mutex> lk(s.m);
  if (s.stopping) throw std::logic_error("loader_start_epoch: loader stopped");
  for (const Slot& slot : s.slots)
    if (slot.held)
      throw std::logic_error("loader_start_epoch: batch " + std::to_string(slot.batch.index) +
                             " is still held; release it first");

  // Abandon what is left of the previous epoch; decodes in flight finish into their slots.
  s.cancelled = true;
  s.work_cv.notify_all();
  s.done_cv.wait(lk, [&] { return s.busy == 0; });

  s.items = std::move(items);
  s.next_item = 0;
  s.next_batch = 0;
  s.n_batches = (int64_t(s.items.size()) + s.cfg.batch - 1) / s.cfg.batch;
  for (size_t k = 0; k < s.slots.size(); ++k) {
    Slot& slot = s.slots[k];
    slot.writable_batch = int64_t(k);
    slot.done = 0;
    slot.stats = {};
  }
  s.epoch_stats = {};
  s.cancelled = false;
  s.work_cv.notify_all();
}

const LoaderBatch* loader_next(Loader& ld) {
  if (!ld.state) return nullptr;
  LoaderState& s = *ld.state;
  std::unique_lock<std::mutex> lk(s.m);
  if (s.next_batch >= s.n_batches || s.halted()) return nullptr;
  const int64_t b = s.next_batch;
  Slot& slot = s.slots[size_t(b % int64_t(s.slots.size()))];
  if (slot.held)
    throw std::logic_error("loader_next: all " + std::to_string(s.slots.size()) +
                           " slots are held; release batch " + std::to_string(slot.batch.index) +
                           " first");

  const int n_items = s.items_in_batch(b);
  const Clock::time_point t0 = Clock::now();
  s.wait(lk, s.done_cv, [&] { return slot.done == n_items || s.halted(); });
  const double waited = seconds_since(t0);
  s.epoch_stats.consumer_wait_s += waited;
  if (slot.done != n_items || s.halted()) return nullptr;

  ++s.next_batch;
  slot.held = true;
  // No worker touches a complete slot until it is released, so the compaction needs no lock;
  // it is rare (only when a file failed) and cheap next to a decode.
  assemble_batch(s, slot, b, n_items);
  LoaderBatch& out = slot.batch;
  out.stats = slot.stats;
  out.stats.consumer_wait_s = waited;
  out.stats.batches = 1;
  out.stats.images = out.n_valid;
  out.stats.errors = int64_t(out.errors.size());
  s.epoch_stats.batches += 1;
  s.epoch_stats.images += out.n_valid;
  s.epoch_stats.errors += out.stats.errors;
  return &out;
}

void loader_release(Loader& ld, const LoaderBatch* batch) {
  if (!batch || !ld.state) return;
  LoaderState& s = *ld.state;
  {
    std::lock_guard<std::mutex> lk(s.m);
    for (Slot& slot : s.slots) {
      if (&slot.batch != batch) continue;
      if (!slot.held) return;  // released twice, or left over from an abandoned epoch
      slot.held = false;
      slot.writable_batch = slot.batch.index + int64_t(s.slots.size());
      slot.done = 0;
      slot.stats = {};
      break;
    }
  }
  s.work_cv.notify_all();
}

void loader_cancel(Loader& ld) {
  if (!ld.state) return;
  LoaderState& s = *ld.state;
  {
    std::lock_guard<std::mutex> lk(s.m);
    s.cancelled = true;
  }
  s.work_cv.notify_all();
  s.done_cv.notify_all();
}

void loader_stop(Loader& ld) {
  if (ld.state) ld.state->join_workers();
}

LoaderStats loader_stats(const Loader& ld) {
  if (!ld.state) return {};
  std::lock_guard<std::mutex> lk(ld.state->m);
  return ld.state->epoch_stats;
}

}  // namespace graft
