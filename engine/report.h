#pragma once
// RUN_DIR/report.html: one self-contained page (inline SVG and base64 JPEG thumbnails, no
// external files or scripts) with the learning curves, the confusion matrix, per-class precision
// and recall, and the worst-misclassified test images.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/run_records.h"

namespace graft {

struct ReportMistake {
  std::string path;  // the image file, read again to make the thumbnail
  int true_label = 0, predicted = 0;
  float prob_predicted = 0, prob_true = 0;
};

struct ReportData {
  std::string title;  // e.g. the data folder
  std::vector<std::string> classes;
  std::vector<EpochMetrics> epochs;
  // Test split (or the evaluated folder): confusion[true * classes + predicted].
  std::vector<int64_t> confusion;
  double test_loss = 0, test_accuracy = 0;
  std::vector<ReportMistake> worst;  // most confident mistakes first, at most a few dozen
  std::vector<std::string> notes;    // e.g. "cache: on", "skipped 2 unreadable images"
  // The epoch whose head the model file holds (0: not known), marked in the curves and the table,
  // and why that one ("lowest validation loss", "last finished epoch", ...).
  int kept_epoch = 0;
  std::string kept_why;
  // The run's settings as (name, value), shown in their own section in this order.
  std::vector<std::pair<std::string, std::string>> settings;
};

// Writes atomically (temporary file, then rename). Throws std::runtime_error naming the path.
void write_report(const std::string& path, const ReportData& data);

}  // namespace graft
