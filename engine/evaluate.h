#pragma once
// graft eval: a trained model file on a folder of photos.
#include <string>
#include <vector>

#include "engine/run_records.h"

namespace graft {

// Evaluates a trained model file on a folder whose classes are the model's (graft eval).
// `skipped` counts skipped files, `skipped_folders` class folders left out for want of images.
EvalResult evaluate_folder(const std::string& model_path, const std::string& data_dir,
                           const std::string& device, int batch_size,
                           std::vector<std::string>* classes, int* skipped,
                           int* skipped_folders = nullptr);

}  // namespace graft
