// The streaming batch loader: batch contents against a plain sequential decode for every thread
// and slot count, bad files, augmentation, slot reuse, epochs, cancel and shutdown.
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/augment.h"
#include "io/loader.h"

using namespace graft;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// A textured, noisy photo of w x h, so decodes and crops differ from image to image.
void write_jpeg(const std::string& path, int w, int h, uint32_t seed) {
  std::vector<uint8_t> px(size_t(w) * h * 3);
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        px[(size_t(y) * w + x) * 3 + c] =
            uint8_t((x * (3 + c) + y * (5 - c) + int(seed) * 37 + int(rng() % 48)) & 255);
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, px.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 90, 0), 0);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<char*>(buf), long(size));
  tjFree(buf);
  tjDestroy(tj);
}

// n JPEGs of assorted sizes (landscape and portrait) under a fresh folder.
std::vector<std::string> make_photos(const std::string& name, int n) {
  const std::string dir = testing::TempDir() + "/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::string> paths;
  for (int i = 0; i < n; ++i) {
    paths.push_back(dir + "/img" + std::to_string(i) + ".jpg");
    const bool portrait = i % 3 == 0;
    const int a = 48 + 9 * i, b = 40 + 5 * i;
    write_jpeg(paths.back(), portrait ? b : a, portrait ? a : b, uint32_t(i + 1));
  }
  return paths;
}

LoaderConfig small_config(int batch, int threads, int slots) {
  LoaderConfig cfg;
  cfg.batch = batch;
  cfg.threads = threads;
  cfg.slots = slots;
  cfg.pre.size = 32;
  return cfg;
}

// Items in a shuffled order, ids = index into paths, so order and ids are both checked.
std::vector<LoaderItem> shuffled_items(const std::vector<std::string>& paths, uint32_t seed) {
  std::vector<LoaderItem> items;
  for (size_t i = 0; i < paths.size(); ++i) items.push_back({&paths[i], 0x1000 + i * 7919, int(i)});
  std::mt19937 rng(seed);
  std::shuffle(items.begin(), items.end(), rng);
  return items;
}

// What the loader must produce for one item: the image, or the decoder's error message.
struct Expected {
  std::vector<uint8_t> pixels;
  std::string error;
};

Expected decode_directly(const LoaderConfig& cfg, const LoaderItem& item) {
  Expected e;
  try {
    const Image img = load_image_for(*item.path, cfg.pre, cfg.limits);
    e.pixels.resize(loader_image_bytes(cfg));
    if (cfg.augment)
      cfg.augment(img, cfg.pre, item.aug_key, e.pixels.data());
    else
      preprocess_image(img, cfg.pre, e.pixels.data());
  } catch (const ImageError& err) {
    e.error = err.what();
  }
  return e;
}

struct Received {
  std::vector<int> ids;
  std::vector<std::string> errors;
  std::vector<uint8_t> pixels;
};

// Checks one batch against a sequential decode of items[b * batch, ...).
void expect_batch_matches(const LoaderConfig& cfg, const std::vector<LoaderItem>& items,
                          const LoaderBatch& got, int b) {
  const size_t bytes = loader_image_bytes(cfg);
  const size_t first = size_t(b) * cfg.batch;
  const size_t last = std::min(items.size(), first + cfg.batch);
  std::vector<int> ids;
  std::vector<std::string> errors;
  int valid = 0;
  for (size_t i = first; i < last; ++i) {
    const Expected e = decode_directly(cfg, items[i]);
    if (!e.error.empty()) {
      errors.push_back(e.error);
      continue;
    }
    ids.push_back(items[i].id);
    ASSERT_LT(valid, got.n_valid) << "batch " << b;
    EXPECT_EQ(std::memcmp(got.pixels + size_t(valid) * bytes, e.pixels.data(), bytes), 0)
        << "batch " << b << " image " << valid << " (" << *items[i].path << ")";
    ++valid;
  }
  EXPECT_EQ(got.index, b);
  EXPECT_EQ(got.n_valid, valid) << "batch " << b;
  EXPECT_EQ(got.ids, ids) << "batch " << b;
  EXPECT_EQ(got.errors, errors) << "batch " << b;
}

// Reads an epoch to the end, checking every batch; returns the number of batches.
int run_checked_epoch(Loader& ld, const LoaderConfig& cfg, const std::vector<LoaderItem>& items,
                      int sleep_ms = 0) {
  loader_start_epoch(ld, items);
  int b = 0;
  while (const LoaderBatch* got = loader_next(ld)) {
    expect_batch_matches(cfg, items, *got, b++);
    if (sleep_ms) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    loader_release(ld, got);
  }
  return b;
}

#ifdef __linux__
int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// A joined thread can linger in /proc for a moment after join returns.
int thread_count_settled(int expected) {
  for (int i = 0; i < 100 && thread_count() != expected; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return thread_count();
}
#endif

}  // namespace

TEST(Loader, MatchesSequentialDecodeForAnyThreadsAndSlots) {
  const std::vector<std::string> paths = make_photos("loader_seq", 23);
  const std::vector<LoaderItem> items = shuffled_items(paths, 5);
  for (int threads : {1, 2, 3, 8})
    for (int slots : {1, 2, 4}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + " slots " + std::to_string(slots));
      const LoaderConfig cfg = small_config(5, threads, slots);  // 23 = 4 x 5 + a batch of 3
      Loader ld;
      loader_create(ld, cfg);
      EXPECT_EQ(run_checked_epoch(ld, cfg, items), 5);
      const LoaderStats st = loader_stats(ld);
      EXPECT_EQ(st.batches, 5);
      EXPECT_EQ(st.images, 23);
      EXPECT_EQ(st.errors, 0);
      EXPECT_GT(st.decode_s, 0);
    }
}

TEST(Loader, SquashModeAndOneImageBatches) {
  const std::vector<std::string> paths = make_photos("loader_squash", 7);
  LoaderConfig cfg = small_config(1, 3, 2);
  cfg.pre.resize_mode = "squash";
  Loader ld;
  loader_create(ld, cfg);
  EXPECT_EQ(run_checked_epoch(ld, cfg, shuffled_items(paths, 1)), 7);
}

TEST(Loader, BadFilesAreReportedAndCompactedOut) {
  std::vector<std::string> paths = make_photos("loader_bad", 10);
  const std::string dir = fs::path(paths[0]).parent_path().string();
  const std::string empty = dir + "/empty.jpg", text = dir + "/notes.jpg",
                    truncated = dir + "/truncated.jpg", missing = dir + "/missing.jpg";
  std::ofstream(empty, std::ios::binary).flush();
  std::ofstream(text) << "this is not a photo\n";
  {
    std::ifstream in(paths[4], std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(truncated, std::ios::binary).write(bytes.data(), long(bytes.size() / 2));
  }
  // Bad files at the start of a batch, in the middle, at its end and alone in the last batch.
  const std::vector<std::string> order = {empty,    paths[0], paths[1], text,      paths[2],
                                          paths[3], paths[5], paths[6], truncated, paths[7],
                                          paths[8], paths[9], missing};
  std::vector<LoaderItem> items;
  for (size_t i = 0; i < order.size(); ++i) items.push_back({&order[i], 0, int(i)});

  for (int threads : {1, 4}) {
    const LoaderConfig cfg = small_config(4, threads, 2);
    Loader ld;
    loader_create(ld, cfg);
    loader_start_epoch(ld, items);
    std::vector<int> ids;
    std::vector<std::string> errors;
    int b = 0;
    while (const LoaderBatch* got = loader_next(ld)) {
      expect_batch_matches(cfg, items, *got, b++);
      ids.insert(ids.end(), got->ids.begin(), got->ids.end());
      errors.insert(errors.end(), got->errors.begin(), got->errors.end());
      loader_release(ld, got);
    }
    EXPECT_EQ(b, 4);
    EXPECT_EQ(ids, (std::vector<int>{1, 2, 4, 5, 6, 7, 9, 10, 11}));
    ASSERT_EQ(errors.size(), 4u);
    // Each message names its file and says what is wrong with it.
    const std::string bad[] = {empty, text, truncated, missing};
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(errors[k].rfind(bad[k] + ": ", 0), 0u) << errors[k];
      EXPECT_GT(errors[k].size(), bad[k].size() + 2) << errors[k];
    }
    const LoaderStats st = loader_stats(ld);
    EXPECT_EQ(st.images, 9);
    EXPECT_EQ(st.errors, 4);
  }
}

TEST(Loader, AugmentIsIndependentOfThreadsAndEqualsDirectCall) {
  const std::vector<std::string> paths = make_photos("loader_aug", 17);
  const std::vector<LoaderItem> items = shuffled_items(paths, 11);
  std::vector<uint8_t> first;
  for (int threads : {1, 2, 5}) {
    LoaderConfig cfg = small_config(6, threads, 2);
    cfg.augment = augment_image;
    Loader ld;
    loader_create(ld, cfg);
    loader_start_epoch(ld, items);
    std::vector<uint8_t> all;
    int b = 0;
    while (const LoaderBatch* got = loader_next(ld)) {
      // expect_batch_matches decodes with cfg.augment too: augment_image with the item's key.
      expect_batch_matches(cfg, items, *got, b++);
      all.insert(all.end(), got->pixels, got->pixels + got->n_valid * loader_image_bytes(cfg));
      loader_release(ld, got);
    }
    EXPECT_EQ(b, 3);
    if (first.empty())
      first = all;
    else
      EXPECT_EQ(all, first) << "threads " << threads;
  }
  // The keys matter: augmentation differs from the plain centre crop.
  const LoaderConfig plain = small_config(6, 1, 2);
  EXPECT_NE(decode_directly(plain, items[0]).pixels,
            std::vector<uint8_t>(first.begin(), first.begin() + loader_image_bytes(plain)));
}

TEST(Loader, SlowConsumerGetsCorrectBatchesAsSlotsAreReused) {
  const std::vector<std::string> paths = make_photos("loader_slow", 30);
  const std::vector<LoaderItem> items = shuffled_items(paths, 3);
  for (int slots : {1, 2}) {
    const LoaderConfig cfg = small_config(4, 3, slots);
    Loader ld;
    loader_create(ld, cfg);
    EXPECT_EQ(run_checked_epoch(ld, cfg, items, 15), 8);
    // Workers ran ahead and had to wait for slots.
    EXPECT_GT(loader_stats(ld).slot_wait_s, 0.01) << "slots " << slots;
  }
}

TEST(Loader, SecondEpochAfterAFullOneAndAfterAnAbandonedOne) {
  const std::vector<std::string> paths = make_photos("loader_epochs", 19);
  const LoaderConfig cfg = small_config(4, 3, 2);
  Loader ld;
  loader_create(ld, cfg);
  EXPECT_EQ(run_checked_epoch(ld, cfg, shuffled_items(paths, 1)), 5);
  EXPECT_EQ(run_checked_epoch(ld, cfg, shuffled_items(paths, 2)), 5);
  EXPECT_EQ(loader_stats(ld).batches, 5);  // per epoch

  // Read one batch of an epoch, then start another: the rest of the first is dropped.
  loader_start_epoch(ld, shuffled_items(paths, 3));
  const LoaderBatch* got = loader_next(ld);
  ASSERT_NE(got, nullptr);
  EXPECT_THROW(loader_start_epoch(ld, shuffled_items(paths, 4)), std::logic_error);  // held
  loader_release(ld, got);
  EXPECT_EQ(run_checked_epoch(ld, cfg, shuffled_items(paths, 4)), 5);

  // An empty epoch ends at once.
  loader_start_epoch(ld, {});
  EXPECT_EQ(loader_next(ld), nullptr);
  EXPECT_EQ(run_checked_epoch(ld, cfg, shuffled_items(paths, 5)), 5);
}

TEST(Loader, HoldingEverySlotIsAnErrorNotAHang) {
  const std::vector<std::string> paths = make_photos("loader_held", 9);
  const LoaderConfig cfg = small_config(2, 2, 2);
  Loader ld;
  loader_create(ld, cfg);
  loader_start_epoch(ld, shuffled_items(paths, 1));
  const LoaderBatch* a = loader_next(ld);
  const LoaderBatch* b = loader_next(ld);
  ASSERT_TRUE(a && b);
  EXPECT_THROW(loader_next(ld), std::logic_error);
  loader_release(ld, a);
  loader_release(ld, a);  // twice: ignored
  const LoaderBatch* c = loader_next(ld);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->index, 2);
  loader_release(ld, b);
  loader_release(ld, c);
}

TEST(Loader, CancelFlagEndsTheEpochEarly) {
  const std::vector<std::string> paths = make_photos("loader_cancel", 40);
  std::atomic<bool> flag{false};
  LoaderConfig cfg = small_config(2, 2, 2);
  cfg.cancel = &flag;
  Loader ld;
  loader_create(ld, cfg);
  const std::vector<LoaderItem> items = shuffled_items(paths, 9);
  loader_start_epoch(ld, items);
  const LoaderBatch* got = loader_next(ld);
  ASSERT_NE(got, nullptr);
  expect_batch_matches(cfg, items, *got, 0);
  loader_release(ld, got);
  flag.store(true);  // what a SIGINT handler does
  const Clock::time_point t0 = Clock::now();
  EXPECT_EQ(loader_next(ld), nullptr);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
  EXPECT_EQ(loader_stats(ld).batches, 1);

  // Set from another thread while the consumer may be waiting.
  flag.store(false);
  loader_start_epoch(ld, items);
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    flag.store(true);
  });
  int n = 0;
  while (const LoaderBatch* b = loader_next(ld)) {
    ++n;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    loader_release(ld, b);
  }
  setter.join();
  EXPECT_LT(n, 20);

  // Cleared, the next epoch runs in full.
  flag.store(false);
  EXPECT_EQ(run_checked_epoch(ld, cfg, items), 20);
}

TEST(Loader, CancelFunctionEndsTheEpochEarly) {
  const std::vector<std::string> paths = make_photos("loader_cancel_fn", 12);
  const LoaderConfig cfg = small_config(3, 2, 1);
  Loader ld;
  loader_create(ld, cfg);
  const std::vector<LoaderItem> items = shuffled_items(paths, 2);
  loader_start_epoch(ld, items);
  const LoaderBatch* got = loader_next(ld);
  ASSERT_NE(got, nullptr);
  loader_cancel(ld);
  loader_release(ld, got);
  EXPECT_EQ(loader_next(ld), nullptr);
  EXPECT_EQ(run_checked_epoch(ld, cfg, items), 4);
}

TEST(Loader, StopsPromptlyWhileWorkersWaitForSlots) {
  const std::vector<std::string> paths = make_photos("loader_stop", 40);
#ifdef __linux__
  const int threads_before = thread_count();
#endif
  const LoaderConfig cfg = small_config(2, 4, 2);
  Loader ld;
  loader_create(ld, cfg);
#ifdef __linux__
  EXPECT_EQ(thread_count(), threads_before + 4);
#endif
  loader_start_epoch(ld, shuffled_items(paths, 1));
  const LoaderBatch* got = loader_next(ld);
  ASSERT_NE(got, nullptr);
  // Both slots fill (one held, one complete); the other workers block waiting for a slot.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const Clock::time_point t0 = Clock::now();
  loader_stop(ld);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
#ifdef __linux__
  EXPECT_EQ(thread_count_settled(threads_before), threads_before);
#endif
  loader_stop(ld);  // twice is fine
  loader_release(ld, got);
  EXPECT_EQ(loader_next(ld), nullptr);
  EXPECT_THROW(loader_start_epoch(ld, shuffled_items(paths, 2)), std::logic_error);
}

TEST(Loader, DestroyedMidEpochOrIdleWithoutHanging) {
  const std::vector<std::string> paths = make_photos("loader_destroy", 24);
#ifdef __linux__
  const int threads_before = thread_count();
#endif
  const Clock::time_point t0 = Clock::now();
  {
    Loader ld;
    loader_create(ld, small_config(2, 3, 1));
    loader_start_epoch(ld, shuffled_items(paths, 1));
    ASSERT_NE(loader_next(ld), nullptr);  // held, never released
  }
  { Loader never_created; }
  {
    Loader idle;
    loader_create(idle, small_config(2, 3, 1));
  }
  {
    Loader recreated;
    loader_create(recreated, small_config(2, 3, 1));
    loader_create(recreated, small_config(3, 2, 2));  // the first is stopped and freed
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
#ifdef __linux__
  EXPECT_EQ(thread_count_settled(threads_before), threads_before);
#endif
}

namespace {
std::atomic<int> g_allocs{0}, g_frees{0};
void* counting_alloc(size_t n) {
  ++g_allocs;
  return std::malloc(n);
}
void counting_release(void* p) {
  ++g_frees;
  std::free(p);
}
}  // namespace

TEST(Loader, UsesTheGivenAllocatorOncePerSlot) {
  const std::vector<std::string> paths = make_photos("loader_alloc", 10);
  g_allocs = 0;
  g_frees = 0;
  LoaderConfig cfg = small_config(3, 2, 3);
  cfg.alloc = counting_alloc;
  cfg.release = counting_release;
  {
    Loader ld;
    loader_create(ld, cfg);
    EXPECT_EQ(run_checked_epoch(ld, cfg, shuffled_items(paths, 1)), 4);
    EXPECT_EQ(run_checked_epoch(ld, cfg, shuffled_items(paths, 2)), 4);
    EXPECT_EQ(g_allocs.load(), 3);
    EXPECT_EQ(g_frees.load(), 0);
  }
  EXPECT_EQ(g_frees.load(), 3);
}

TEST(Loader, RejectsBadConfigs) {
  Loader ld;
  EXPECT_THROW(loader_create(ld, small_config(0, 1, 1)), std::invalid_argument);
  EXPECT_THROW(loader_create(ld, small_config(1, 0, 1)), std::invalid_argument);
  EXPECT_THROW(loader_create(ld, small_config(1, 1, 0)), std::invalid_argument);
  LoaderConfig half = small_config(1, 1, 1);
  half.alloc = counting_alloc;
  EXPECT_THROW(loader_create(ld, half), std::invalid_argument);
  LoaderConfig mode = small_config(1, 1, 1);
  mode.pre.resize_mode = "stretch";
  EXPECT_THROW(loader_create(ld, mode), std::invalid_argument);
  EXPECT_THROW(loader_start_epoch(ld, {}), std::logic_error);  // never created
  EXPECT_EQ(loader_next(ld), nullptr);
  loader_create(ld, small_config(1, 1, 1));
  EXPECT_THROW(loader_start_epoch(ld, {LoaderItem{}}), std::invalid_argument);  // no path
}
