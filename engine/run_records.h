#pragma once
// The JSON records of a run: one metrics.jsonl line per epoch (and back, for --resume), one
// stages.jsonl object per epoch, and the test/eval result object (eval_json, declared in
// engine/trainer.h beside evaluate_folder, is defined in run_records.cpp).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/trainer.h"

namespace graft {

// metrics.jsonl's epoch line; a cached epoch has feature_rows_per_second and a null image rate.
std::string metrics_line(const EpochMetrics& em);
EpochMetrics metrics_from_json(const nlohmann::json& j);

// stages.jsonl's object for one epoch (graft bench adds its derived fields to it).
nlohmann::ordered_json stages_json(const EpochStages& e);

}  // namespace graft
