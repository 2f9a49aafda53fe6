#include "engine/stages.h"

#include <stdexcept>

#ifdef GRAFT_HAVE_CUDA
#include "kernels/cuda/check.h"
#endif

namespace graft {

const char* stage_name(Stage s) {
  switch (s) {
    case Stage::copy:
      return "h2d_copy";
    case Stage::backbone:
      return "backbone";
    case Stage::head:
      return "head";
    case Stage::optimiser:
      return "optimiser";
    default:
      return "?";
  }
}

void stage_clock_create(StageClock& c, const Device& dev, bool enabled) {
  c.dev = dev;
  c.enabled = enabled;
}

void stage_clock_reset(StageClock& c) {
  c.marks.clear();
  c.times.clear();
}

void stage_mark(StageClock& c, Stage s, bool begin, Lane lane) {
  if (!c.enabled) return;
  c.marks.push_back({s, begin});
  if (!c.dev.is_cuda()) {
    c.times.push_back(std::chrono::steady_clock::now());
    return;
  }
#ifdef GRAFT_HAVE_CUDA
  const size_t i = c.marks.size() - 1;
  if (i == c.events.size()) {  // the first epoch grows the pool; later epochs reuse it
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));  // with timing, unlike the ordering events
    c.events.emplace_back().handle = e;
  }
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(c.events[i].handle),
                             lane == Lane::copy ? c.dev.copy_stream : c.dev.stream));
#else
  (void)lane;
#endif
}

StageTotals stage_clock_collect(StageClock& c) {
  StageTotals t;
  if (!c.enabled || c.marks.empty()) return t;
  synchronize(c.dev);
  std::array<int, size_t(Stage::count)> open;
  open.fill(-1);
  for (size_t i = 0; i < c.marks.size(); ++i) {
    const size_t s = size_t(c.marks[i].stage);
    if (c.marks[i].begin) {
      open[s] = int(i);
      continue;
    }
    if (open[s] < 0) continue;
    double seconds = 0;
    if (c.dev.is_cuda()) {
#ifdef GRAFT_HAVE_CUDA
      CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(c.events[i].handle)));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(c.events[open[s]].handle),
                                      static_cast<cudaEvent_t>(c.events[i].handle)));
      seconds = ms / 1000.0;
#endif
    } else {
      seconds = std::chrono::duration<double>(c.times[i] - c.times[open[s]]).count();
    }
    t.seconds[s] += seconds;
    if (c.marks[i].stage != Stage::copy) t.compute_busy += seconds;
    open[s] = -1;
  }
  return t;
}

}  // namespace graft
