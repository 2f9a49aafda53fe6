// The run folder: which files are graft's, checks before a run touches it, creating it, and the
// flushed line appends that keep every finished epoch when a run is killed.
#include "engine/run_folder.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "engine/checkpoint.h"

namespace graft {

namespace fs = std::filesystem;

// graft's own files in a run folder: what --overwrite replaces, and nothing else there.
static const char* const kRunFiles[] = {
    "config.json",       "split.json", "metrics.jsonl", "stages.jsonl", "checkpoint.safetensors",
    "model.safetensors", "report.html"};

std::string run_file(const TrainConfig& cfg, const char* name) {
  return (fs::path(cfg.out_dir) / name).string();
}

// Appends one line and flushes it, so a killed run keeps every finished epoch's line; a failed
// write (full disk, folder gone) stops the run naming the file instead of losing lines silently.
void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  if (f) f << line << "\n" << std::flush;
  if (!f) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
}

// Runs before anything is loaded or written: a new run must not mix its files with another
// run's (its model, metrics and report would be silently replaced), and a resumed run cannot go
// back before the epochs it has finished.
void check_run_folder(const TrainConfig& cfg, bool resume) {
  std::error_code ec;
  const fs::path dir(cfg.out_dir);
  const bool exists = fs::exists(dir, ec);
  if (exists && !fs::is_directory(dir, ec))
    throw std::runtime_error(cfg.out_dir + ": exists and is not a folder (--out names a folder)");
  if (exists && !resume && !cfg.overwrite) {
    const bool empty = fs::is_empty(dir, ec);
    if (ec) throw std::runtime_error("cannot read run folder " + cfg.out_dir + ": " + ec.message());
    if (!empty)
      throw std::runtime_error(cfg.out_dir +
                               " is not empty (another run's files?): choose a new --out folder, "
                               "or pass --overwrite to replace its run files");
  }
  if (!resume) return;
  const int done = checkpoint_epoch(run_file(cfg, "checkpoint.safetensors"));
  if (cfg.epochs < done)
    throw std::runtime_error(cfg.out_dir + " has finished " + std::to_string(done) +
                             " epochs: --epochs " + std::to_string(cfg.epochs) +
                             " would undo some; give --epochs " + std::to_string(done) +
                             " or more");
  const int saved = load_config(run_file(cfg, "config.json")).epochs;
  if (cfg.epochs != saved && cfg.lr_schedule == "cosine")
    throw std::runtime_error(cfg.out_dir +
                             ": --epochs cannot change on --resume with --lr-schedule cosine (the "
                             "decay is fitted to the run's " +
                             std::to_string(saved) + " epochs); start a new run instead");
}

// Creates the run folder (after the input was accepted: a rejected run leaves none) and checks it
// takes files, so an unwritable --out is one line with the OS's reason, not a failed rename.
void prepare_run_folder(const TrainConfig& cfg, bool resume) {
  std::error_code ec;
  fs::create_directories(cfg.out_dir, ec);
  if (ec) throw std::runtime_error("cannot create run folder " + cfg.out_dir + ": " + ec.message());
  if (::access(cfg.out_dir.c_str(), W_OK | X_OK) != 0)
    throw std::runtime_error("cannot write into run folder " + cfg.out_dir + ": " +
                             std::strerror(errno));
  if (!resume && cfg.overwrite) {
    // Also the old checkpoint: a new run killed before its first epoch must not resume the old.
    for (const char* f : kRunFiles) {
      fs::remove(run_file(cfg, f), ec);
      fs::remove(run_file(cfg, f) + ".tmp", ec);
    }
  }
  const std::string config = run_file(cfg, "config.json");
  if (!resume) {
    save_config(cfg, config);
  } else if (const int saved = load_config(config).epochs; saved != cfg.epochs) {
    std::fprintf(stderr, "graft: --resume: training %s to epoch %d (it was set to %d)\n",
                 cfg.out_dir.c_str(), cfg.epochs, saved);
    save_config(cfg, config);
  }
}

}  // namespace graft
