#pragma once
// RUN_DIR/checkpoint.safetensors: everything a run needs to continue exactly after its last
// finished epoch (the head and its optimiser state, the kept head, the early-stopping and
// overfitting counters), written atomically after every epoch.
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/head.h"

namespace graft {

struct Checkpoint {
  int epoch = 0;  // finished epochs; 0 = nothing to resume
  int64_t head_step = 0;
  double best_val_loss = std::numeric_limits<double>::infinity();
  int since_best = 0, overfit_epochs = 0;
  bool overfit_warned = false;
  std::vector<std::pair<std::string, std::vector<float>>> state;  // head_state()
  Dense best_hidden, best_out;
  // Fine-tuning: the trained slice of the backbone with its moments, and as kept (empty when the
  // backbone is frozen).
  std::vector<float> backbone, backbone_m, backbone_v, best_backbone;
};

void write_checkpoint(const std::string& path, const Checkpoint& c);
// Throws std::runtime_error naming the file when it does not fit `shape`.
Checkpoint read_checkpoint(const std::string& path, const HeadShape& shape);

// The finished epochs a checkpoint records, from its metadata alone (0 when there is no file), so
// a resumed run can be checked before anything is loaded or written.
int checkpoint_epoch(const std::string& path);

// Writes `text` to a temporary file, syncs it and renames it over `path`. Throws
// std::runtime_error "cannot write PATH: <the OS's reason>" on any failure, leaving `path` as it
// was.
void write_file_atomic(const std::string& path, const std::string& text);

// Keeps the first `epochs` lines of metrics.jsonl: a killed run may have written one more than
// its last checkpoint covers, and a finished one also the test line.
void truncate_metrics(const std::string& path, int epochs);

}  // namespace graft
