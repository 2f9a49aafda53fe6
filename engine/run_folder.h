#pragma once
// The run folder (--out): graft's files in it, the checks before a run touches it, and appends
// that survive a killed run.
#include <string>

#include "engine/config.h"

namespace graft {

// RUN_DIR/name.
std::string run_file(const TrainConfig& cfg, const char* name);

// Appends one line and flushes it; a failed write throws naming the file.
void append_line(const std::string& path, const std::string& line);

// Before anything is loaded or written: refuses a non-empty folder for a new run (unless
// cfg.overwrite) and a resume that would go back below its finished epochs or change a cosine
// schedule's length.
void check_run_folder(const TrainConfig& cfg, bool resume);

// Creates the folder, proves it takes files, removes an overwritten run's files and writes (or on
// resume updates) config.json.
void prepare_run_folder(const TrainConfig& cfg, bool resume);

}  // namespace graft
