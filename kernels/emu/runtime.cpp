// The CUDA runtime API over host memory: one emulated device with an H100's limits, allocations
// filled with NaN, streams that run their work at once in issue order (a valid schedule of any
// CUDA program that synchronises correctly), events that read the host clock, and graphs that
// record what a captured stream was given and replay it.
#include <sys/sysinfo.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/emu/internal.h"

struct CUstream_st {
  bool capturing = false;
  std::vector<std::function<void()>> captured;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when{};
  bool recorded = false;
};
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

namespace graft::emu {
namespace {

// Like CUDA's, the last error is per host thread; cudaGetLastError returns and clears it. A fault
// found while a kernel ran is also returned by the next synchronising call (CUDA's faults stay for
// the life of the context; here they clear once read, so one test process can go on).
struct LastError {
  cudaError_t err = cudaSuccess;
  std::string detail;
  bool fault = false;  // found while a kernel ran, rather than refused at the call
};
thread_local LastError g_last;
// The most recent error with what the emulation found; kept after cudaGetLastError clears the
// error, so that the usual cudaGetErrorString(cudaGetLastError()) can tell it.
thread_local LastError g_report;

// What a synchronising call returns: a fault of a kernel that ran since the last check.
cudaError_t ok_or_fault() {
  if (!g_last.fault) return cudaSuccess;
  g_last.fault = false;
  const cudaError_t err = g_last.err;
  g_last.err = cudaSuccess;
  return err;
}

cudaError_t fail(cudaError_t err, const std::string& detail) {
  set_last_error(err, detail.c_str());
  return err;
}

bool valid_kind(cudaMemcpyKind k) {
  return k >= cudaMemcpyHostToHost && k <= cudaMemcpyDefault;
}

}  // namespace

void set_last_error(cudaError_t err, const char* detail) {
  g_last.err = err;
  g_last.detail = detail ? detail : "";
  g_last.fault = false;
  g_report = g_last;
}

void set_fault(cudaError_t err, const char* detail) {
  set_last_error(err, detail);
  g_last.fault = true;
}

uint64_t launch_seed() {
  // GRAFT_EMU_SEED picks the sequence of launch seeds; every launch gets the next one, so a run
  // repeats exactly with the same seed and program.
  static std::mutex mu;
  static uint64_t state = [] {
    const char* s = std::getenv("GRAFT_EMU_SEED");
    return s ? std::strtoull(s, nullptr, 10) : 20261207ull;
  }();
  std::lock_guard<std::mutex> lock(mu);
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return state >> 11;
}

cudaError_t submit(cudaStream_t stream, std::function<void()> op) {
  if (stream && stream->capturing) {
    stream->captured.push_back(std::move(op));
    return cudaSuccess;
  }
  op();
  return cudaSuccess;
}

cudaError_t symbol_copy(void* dst, size_t dst_size, const void* src, size_t count, size_t offset,
                        cudaMemcpyKind kind, cudaStream_t stream) {
  if (offset > dst_size || count > dst_size - offset)
    return fail(cudaErrorInvalidValue, "cudaMemcpyToSymbol: " + std::to_string(count) +
                                           " bytes at offset " + std::to_string(offset) +
                                           " overrun a " + std::to_string(dst_size) +
                                           "-byte symbol");
  if (!valid_kind(kind)) return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpyToSymbol");
  char* d = static_cast<char*>(dst) + offset;
  return submit(stream, [d, src, count] { std::memcpy(d, src, count); });
}

void launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
            std::function<void()> body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  std::string why;
  if (threads == 0 || threads > kMaxThreadsPerBlock || block.x > 1024 || block.y > 1024 ||
      block.z > 64)
    why = "block (" + std::to_string(block.x) + "," + std::to_string(block.y) + "," +
          std::to_string(block.z) + ") outside 1..1024 threads (x, y <= 1024, z <= 64)";
  else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
           grid.z > 65535)
    why = "grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
          std::to_string(grid.z) + ") outside 1..2^31-1 x 1..65535 x 1..65535";
  if (!why.empty()) {
    set_last_error(cudaErrorInvalidConfiguration, (std::string(name) + ": " + why).c_str());
    return;
  }
  if (shared_bytes > kSharedPerBlock) {
    // Over 48 KB a kernel has to opt in with cudaFuncSetAttribute, which graft never does.
    set_last_error(cudaErrorInvalidValue,
                   (std::string(name) + ": " + std::to_string(shared_bytes) +
                    " bytes of dynamic shared memory, over the 49152 a block may have")
                       .c_str());
    return;
  }
  auto g = std::make_shared<Grid>();
  g->name = name;
  g->grid = grid;
  g->block = block;
  g->dynamic_bytes = shared_bytes;
  g->threads = int(threads);
  auto shared_body = std::make_shared<std::function<void()>>(std::move(body));
  submit(stream, [g, shared_body] {
    g->seed = launch_seed();
    run_grid(*g, *shared_body);
  });
}

}  // namespace graft::emu

using graft::emu::fail;
using graft::emu::g_last;
using graft::emu::g_report;

namespace {
// Each error the emulation returns: its name and CUDA's wording of it.
struct ErrorText {
  cudaError_t err;
  const char* name;
  const char* text;
};
constexpr ErrorText kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
     "invalid configuration argument"},
    {cudaErrorInvalidSymbol, "cudaErrorInvalidSymbol", "invalid device symbol"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection",
     "invalid copy direction for memcpy"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress",
     "an illegal memory access was encountered"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources",
     "too many resources requested for launch"},
    {cudaErrorIllegalInstruction, "cudaErrorIllegalInstruction",
     "an illegal instruction was encountered"},
    {cudaErrorMisalignedAddress, "cudaErrorMisalignedAddress", "misaligned address"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
};
const ErrorText* error_text(cudaError_t err) {
  for (const ErrorText& e : kErrors)
    if (e.err == err) return &e;
  return nullptr;
}
}  // namespace

const char* cudaGetErrorName(cudaError_t err) {
  const ErrorText* e = error_text(err);
  return e ? e->name : "cudaErrorUnknown";
}

// CUDA's wording, followed by what the emulation found when this thread's last error is `err`.
const char* cudaGetErrorString(cudaError_t err) {
  const ErrorText* e = error_text(err);
  const char* base = e ? e->text : "unknown error";
  if (err == cudaSuccess || g_report.err != err || g_report.detail.empty()) return base;
  thread_local std::string text;
  text = std::string(base) + " (emulated: " + g_report.detail + ")";
  return text.c_str();
}

cudaError_t cudaGetLastError() {
  const cudaError_t err = g_last.err;
  g_last.err = cudaSuccess;
  g_last.fault = false;
  return err;
}
cudaError_t cudaPeekAtLastError() {
  return g_last.err;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) {
  return dev == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "the emulation has device 0 only");
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int dev) {
  if (dev != 0) return fail(cudaErrorInvalidDevice, "the emulation has device 0 only");
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "graft CUDA emulation (CPU)");
  struct sysinfo si {};
  sysinfo(&si);
  prop->totalGlobalMem = size_t(si.totalram) * si.mem_unit;
  prop->sharedMemPerBlock = graft::emu::kSharedPerBlock;
  prop->sharedMemPerBlockOptin = graft::emu::kSharedOptin;
  prop->sharedMemPerMultiprocessor = 228 * 1024;
  prop->totalConstMem = 64 * 1024;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = graft::emu::kSmCount;
  prop->l2CacheSize = 50 * 1024 * 1024;
  prop->maxThreadsPerMultiProcessor = 2048;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev) {
  if (dev != 0) return fail(cudaErrorInvalidDevice, "the emulation has device 0 only");
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = graft::emu::kSmCount;
      return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
}

cudaError_t cudaDeviceSynchronize() {
  return graft::emu::ok_or_fault();
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  struct sysinfo si {};
  sysinfo(&si);
  *total = size_t(si.totalram) * si.mem_unit;
  *free = size_t(si.freeram + si.bufferram) * si.mem_unit;
  return cudaSuccess;
}

// Each allocation is its own host block of exactly the size asked for (so AddressSanitizer sees a
// read past its end), 256-byte aligned like cudaMalloc's, and starts as NaN.
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (posix_memalign(p, 256, bytes) != 0) {
    *p = nullptr;
    return fail(cudaErrorMemoryAllocation, std::to_string(bytes) + " bytes");
  }
  std::memset(*p, 0xFF, bytes);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) {
  *p = std::malloc(bytes ? bytes : 1);
  return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation, std::to_string(bytes) + " bytes");
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  return cudaHostAlloc(p, bytes, 0);
}
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (!graft::emu::valid_kind(kind)) return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpy");
  if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue, "cudaMemcpy with a null pointer");
  return graft::emu::submit(stream, [=] {
    if (bytes) std::memmove(dst, src, bytes);
  });
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
  return err != cudaSuccess ? err : graft::emu::ok_or_fault();
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && !p) return fail(cudaErrorInvalidValue, "cudaMemset with a null pointer");
  return graft::emu::submit(stream, [=] {
    if (bytes) std::memset(p, value, bytes);
  });
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  return cudaMemsetAsync(p, value, bytes, nullptr);
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  return cudaStreamCreate(s);
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return graft::emu::ok_or_fault();
}
cudaError_t cudaStreamQuery(cudaStream_t) {
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t e, unsigned) {
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent");
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  return cudaEventCreate(e);
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord");
  return graft::emu::submit(s, [e] {
    e->when = std::chrono::steady_clock::now();
    e->recorded = true;
  });
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize");
  return graft::emu::ok_or_fault();
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle, "cudaEventQuery");
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end || !start->recorded || !end->recorded)
    return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event not recorded");
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  if (!s) return fail(cudaErrorStreamCaptureUnsupported, "capture of the default stream");
  s->capturing = true;
  s->captured.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  if (!s || !s->capturing)
    return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: not capturing");
  s->capturing = false;
  *graph = new CUgraph_st{std::move(s->captured)};
  s->captured.clear();
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: no graph");
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!exec) return fail(cudaErrorInvalidValue, "cudaGraphLaunch: no graph");
  for (const auto& op : exec->ops) graft::emu::submit(s, op);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
