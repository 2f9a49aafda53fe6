#pragma once
// A run's resources and its passes over a split, shared by training (engine/trainer.cpp) and
// evaluation (engine/evaluate.cpp): the Job that owns the device, the model, the network, the
// loader and the buffers; one pass over a split, a batch at a time, from the loader or the feature
// cache; the current head evaluated on a split.
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/device.h"
#include "engine/model.h"
#include "engine/network.h"
#include "engine/run_records.h"
#include "engine/stages.h"
#include "io/dataset.h"
#include "io/loader.h"

namespace graft {

// One split's images: paths and labels, plus the cached feature rows when the cache is on.
struct SplitData {
  std::string name;
  std::vector<const DatasetItem*> items;
  float* cache = nullptr;         // [items][feature_dim] on the device, or null
  std::vector<char> cached, bad;  // per item
};

// Everything the loop needs on the device, carved from one arena.
struct Buffers {
  Arena arena;
  int32_t* labels = nullptr;     // [batch]
  int32_t* rows = nullptr;       // [batch] cache rows to gather
  float* losses = nullptr;       // [largest split] per-row losses of the current pass
  int64_t* confusion = nullptr;  // [classes][classes]
};

// Owns every resource of a run: each member releases its own on every exit, an exception or an
// interrupt included.
struct Job {
  explicit Job(const TrainConfig& c) : cfg(c) {}
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  const TrainConfig& cfg;
  Device dev;
  Model backbone;
  Dataset train_ds, val_ds, test_ds;  // val_ds/test_ds used only for --val-data/--test-data
  std::vector<std::string> classes;
  SplitData train, val, test;
  Network net;  // the backbone's op list, then the head
  Loader loader;
  LoaderConfig loader_cfg;
  std::vector<Event> slot_copied;  // per loader slot: its pixels have reached the device
  StageClock clock;
  Buffers buf;
  bool cache = false;
  int fine_tune = 0;        // the backbone's blocks that train (engine/fine_tune.h)
  size_t cache_row = 0;     // floats a photo of the feature cache (engine/network.h)
  int skipped = 0;          // files: unreadable, not images, or failing to decode
  int skipped_folders = 0;  // class folders without images
};

// Set on SIGINT/SIGTERM (the trainer installs the handler): the loader stops handing out batches
// and the training loop stops after the step in flight, keeping the last checkpoint.
std::atomic<bool>& stop_requested();

// "graft: warning: MSG" on stderr.
void warn(const std::string& msg);

// The streaming loader for the job's device and batch (pinned slots on CUDA), and an event per
// slot for its copy to the device.
void loader_setup(Job& job);

// One pass over a split in a given order, one batch at a time: from the feature cache when every
// image's features are there, else decoded by the streaming loader and run through the backbone.
struct Pass {
  SplitData* split = nullptr;
  bool decode = false, augment = false;
  StageClock* clock = nullptr;        // set for training passes
  const LoaderBatch* held = nullptr;  // the slot to hand back once its copy has landed
};

struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Pass pass_begin(Job& job, SplitData& split, const std::vector<int>& order, bool augment,
                uint64_t aug_base);
// The next batch (positions pos[0..n) of the pass's order) as the network's input: decoded
// images in a loader slot, or rows gathered from the feature cache into its slot in the network.
// Returns the valid positions (unreadable images dropped, and remembered as bad).
std::vector<int> pass_next(Job& job, Pass& pass, const int* pos, int n, NetworkInput* in);
// After a forward pass over decoded images: the rows the cache holds (the features, or the
// activation entering the first trained block) into it, so later passes skip decoding and the
// frozen part of the backbone.
void pass_cache(Job& job, const Pass& pass, const std::vector<int>& valid);
void pass_end(Job& job, Pass& pass);

void upload_labels(Job& job, const SplitData& split, const std::vector<int>& pos);
// Loss, accuracy and confusion of the current head on a split (no dropout).
EvalResult evaluate_split(Job& job, SplitData& split);

}  // namespace graft
