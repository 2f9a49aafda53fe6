#pragma once
// Where an epoch's time goes. The trainer marks the start and end of each stage of every step;
// on the GPU a mark is an event on the stream doing the work (read once, at the end of the
// epoch, so timing adds no host syncs), on the CPU the host clock. Decoding is timed by the
// loader's own counters.
#include <array>
#include <chrono>
#include <string>
#include <vector>

#include "engine/device.h"

namespace graft {

enum class Stage { copy, backbone, head, optimiser, count };
const char* stage_name(Stage s);

struct StageClock {
  Device dev;
  bool enabled = false;
  // Per mark: which stage, begin or end, and its event (GPU) or time point (CPU).
  struct Mark {
    Stage stage;
    bool begin;
  };
  std::vector<Mark> marks;
  std::vector<Event> events;  // timed events, reused across epochs (grown on first use only)
  std::vector<std::chrono::steady_clock::time_point> times;
};

void stage_clock_create(StageClock& c, const Device& dev, bool enabled);
// Starts an epoch's record.
void stage_clock_reset(StageClock& c);
// Marks the begin or end of a stage on the lane that runs it.
void stage_mark(StageClock& c, Stage s, bool begin, Lane lane);

struct StageTotals {
  std::array<double, size_t(Stage::count)> seconds{};  // summed per stage
  double compute_busy = 0;  // seconds the compute stream (or the CPU) spent in backbone + head
};
// Waits for the device and sums the epoch's stages.
StageTotals stage_clock_collect(StageClock& c);

}  // namespace graft
