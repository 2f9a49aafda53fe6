#pragma once
// Streaming batch loader: worker threads decode and preprocess the images of an epoch, in the
// epoch's order, into a small ring of batch buffers ("slots"), so that decoding overlaps with
// whatever the consumer does with the previous batch (a host-to-device copy, a forward pass).
//
//   Loader ld;
//   loader_create(ld, cfg);                        // allocates slots, starts the threads
//   for each epoch:
//     loader_start_epoch(ld, items);
//     while (const LoaderBatch* b = loader_next(ld)) {
//       use b->pixels[0 .. b->n_valid * image_bytes), b->ids, b->errors;
//       loader_release(ld, b);                     // once nothing reads the slot any more
//     }
//   loader_stop(ld);                               // or let the destructor do it
//
// Batch b holds items [b * batch, (b + 1) * batch) of the epoch. Its valid images are compacted
// to the front of the slot in item order, so a batch's content depends only on the items, never
// on thread timing. A file that cannot be decoded is dropped from its batch and reported in
// LoaderBatch::errors; it never stops the epoch.
//
// Threading: one consumer thread calls loader_start_epoch / loader_next / loader_release;
// loader_cancel may be called from any thread. Each image is decoded by one worker on its own
// (TurboJPEG and the resize are single-threaded); the workers use no OpenMP.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/image.h"

namespace graft {

// Writes pre.size x pre.size x 3 uint8 RGB of a randomly augmented src to dst, from `key` alone
// (the engine passes augment_image; io/ does not link the engine).
using AugmentFn = void (*)(const Image& src, const Preprocess& pre, uint64_t key, uint8_t* dst);

struct LoaderConfig {
  int batch = 32;   // images per batch (the last batch of an epoch may hold fewer)
  int threads = 1;  // decode threads, started once and reused across epochs
  int slots = 3;    // batch buffers in the ring; >= 2 lets decoding run ahead of the consumer
  Preprocess pre;
  DecodeLimits limits;
  // Null: preprocess_image (deterministic centre crop or squash). Set: augment(img, pre,
  // item.aug_key, dst) instead.
  AugmentFn augment = nullptr;
  // Slot memory, e.g. cudaHostAlloc / cudaFreeHost wrappers for pinned buffers. Both null: 64-byte
  // aligned host memory. alloc must return nullptr (or throw) on failure.
  void* (*alloc)(size_t bytes) = nullptr;
  void (*release)(void* ptr) = nullptr;
  // Optional flag owned by the caller, e.g. set by a SIGINT handler (a plain store of true, which
  // is async-signal-safe for a lock-free atomic). Once it reads true, workers stop taking images
  // and loader_next returns nullptr; it is polled every few milliseconds while anyone waits. The
  // flag is the caller's to clear: an epoch started while it is still true ends at once.
  const std::atomic<bool>* cancel = nullptr;
};

struct LoaderItem {
  const std::string* path = nullptr;  // must stay valid until the epoch is over
  uint64_t aug_key = 0;               // used only with LoaderConfig::augment
  int id = 0;                         // the caller's handle, returned in LoaderBatch::ids
};

// Seconds are wall-clock seconds. For one batch, decode_s and slot_wait_s are those spent on its
// items; for an epoch, the sums over its batches (plus the slot waits of items that never
// completed).
struct LoaderStats {
  double decode_s = 0;         // reading + decoding + preprocessing, summed over workers
  double consumer_wait_s = 0;  // the consumer blocked in loader_next
  double slot_wait_s = 0;      // workers blocked until their batch's slot was released
  int64_t batches = 0;         // batches handed out by loader_next
  int64_t images = 0;          // valid images in them
  int64_t errors = 0;          // files dropped from them
};

struct LoaderBatch {
  uint8_t* pixels = nullptr;  // n_valid images, pre.size x pre.size x 3 uint8 each, packed
  int n_valid = 0;
  int index = 0;                    // batch number within the epoch
  std::vector<int> ids;             // LoaderItem::id of each valid image, in order
  std::vector<std::string> errors;  // one line per dropped file ("<path>: <fault>"), in order
  LoaderStats stats;                // this batch only
};

struct LoaderState;  // threads, slots and synchronisation (io/loader.cpp)

struct Loader {
  std::unique_ptr<LoaderState> state;
  Loader();
  ~Loader();  // loader_stop, then frees the slots
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
};

// Allocates the slots and starts the worker threads (a loader that was already created is
// stopped and freed first). Throws std::invalid_argument for a bad config and std::bad_alloc
// when a slot cannot be allocated.
void loader_create(Loader& ld, const LoaderConfig& cfg);

// Begins an epoch over `items`, in this order. A previous epoch that was not read to the end is
// abandoned (its in-flight decodes finish first). Throws std::logic_error while a batch is still
// held (not released) or after loader_stop.
void loader_start_epoch(Loader& ld, std::vector<LoaderItem> items);

// Blocks until the next batch, in order, is complete and returns it; the pointer stays valid until
// loader_release. Returns nullptr at the end of the epoch, after a cancel, after loader_stop, or
// when no epoch was started. Throws std::logic_error when the next batch's slot is still held by
// the caller (every slot held: release one first).
const LoaderBatch* loader_next(Loader& ld);

// Hands the batch's slot back to the workers. Call it only when nothing reads the pixels any
// more (for pinned slots: after the host-to-device copy from it has completed). nullptr, and a
// batch of an abandoned epoch, are ignored.
void loader_release(Loader& ld, const LoaderBatch* batch);

// Ends the current epoch early: workers stop taking images and loader_next returns nullptr. The
// next loader_start_epoch clears it. Safe from any thread (not from a signal handler: use
// LoaderConfig::cancel there).
void loader_cancel(Loader& ld);

// Stops and joins the worker threads, abandoning any epoch, even while workers wait for a slot.
// Idempotent. The slots stay allocated until the Loader is destroyed (or re-created), so a copy
// still reading from one is not cut short; the caller must finish such copies before that.
void loader_stop(Loader& ld);

// The current (or last) epoch's totals.
LoaderStats loader_stats(const Loader& ld);

// Bytes of one image in a slot: pre.size * pre.size * 3.
size_t loader_image_bytes(const LoaderConfig& cfg);

}  // namespace graft
