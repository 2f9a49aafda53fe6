#pragma once
// The transfer-learning job: a folder of photos in; a trained head, metrics, a report and one
// self-contained model file out. One loop for both devices: everything device-specific goes
// through engine/device.h.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/head.h"
#include "engine/run_records.h"
#include "io/dataset.h"

namespace graft {

struct TrainResult {
  std::vector<EpochMetrics> epochs;
  std::vector<EpochStages> stages;  // epochs run by this call (not those before a resume)
  EvalResult test;
  bool has_test = false;
  bool cache_used = false;
  int skipped_files = 0;       // unreadable or non-image files, each counted once
  int skipped_folders = 0;     // class folders without images, left out
  int kept_epoch = 0;          // the epoch whose head is in model.safetensors
  bool stopped_early = false;  // --early-stop ended the run before its last epoch
  std::string model_path, report_path;
};

// Runs the job. With resume, continues from RUN_DIR/checkpoint.safetensors (written atomically
// after every epoch): the finished run's metrics.jsonl is then the one an uninterrupted run
// writes, wall-clock and throughput fields aside. A resumed run may have more epochs than its
// config.json (it is updated), not fewer than it has finished; with the cosine schedule the
// epoch count cannot change, as the decay is fitted to it.
// metrics.jsonl: one line per epoch, then {"kept_epoch", "epochs_finished", "stopped_early",
// "interrupted"}, then the test line. On SIGINT/SIGTERM the model and report are written from
// the last finished epoch (the kept head) before train throws the resume hint.
TrainResult train(const TrainConfig& cfg, bool resume = false);

// "1 file skipped", "2 files skipped, 1 empty class folder skipped"; empty when both are 0.
std::string skipped_summary(int files, int folders);

}  // namespace graft
