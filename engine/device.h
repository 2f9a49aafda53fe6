#pragma once
// Where the math runs, and the memory it runs on. The trainer and the forward pass are written
// once against Device: every op call below dispatches to the CPU twin or the CUDA kernel (on the
// device's stream), so both backends share one loop and can be compared step by step.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace graft {

enum class DeviceKind { cpu, cuda };

// Owns a GPU's two streams; destroyed with the last Device that refers to it.
struct DeviceStreams {
  cudaStream_t compute = nullptr, copy = nullptr;
  DeviceStreams() = default;
  DeviceStreams(const DeviceStreams&) = delete;
  DeviceStreams& operator=(const DeviceStreams&) = delete;
  ~DeviceStreams();
};

// Cheap to copy: arenas, extractors and clocks each keep one, and the streams live until the last
// copy is gone, so nothing can outlive the streams it runs on.
struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int gpu = 0;                                 // CUDA device index (cuda only)
  cudaStream_t stream = nullptr;               // compute stream (cuda only)
  cudaStream_t copy_stream = nullptr;          // host-to-device copies of input batches (cuda only)
  std::shared_ptr<const DeviceStreams> owner;  // what stream and copy_stream belong to
  bool is_cuda() const { return kind == DeviceKind::cuda; }
};

// The GPU that make_device opens: an index among the devices CUDA_VISIBLE_DEVICES leaves visible
// (default 0). Set once from `--gpu N` before any device is made; like CUDA_VISIBLE_DEVICES it is a
// property of the process, not of one run.
void select_gpu(int index);
int selected_gpu();

// True when this build has the CUDA backend, the selected GPU exists and this binary has code for
// it (a kernel image for its architecture, or PTX the driver can compile); *why says otherwise.
bool cuda_available(std::string* why);
// "auto" -> cuda when available, else cpu with one line on stderr saying why; "cpu"; "cuda"
// (throws with the reason, and for a card the build lacks, the CMake setting to rebuild with).
Device make_device(const std::string& name);
std::string device_name(const Device& dev);  // "cpu (2 threads)" or the GPU's name
// Memory available for new allocations on the device (GPU memory, or free RAM on cpu).
size_t device_free_memory(const Device& dev);

// One allocation per run, carved up front: no malloc/cudaMalloc inside the step loop.
// Device memory on cuda, 64-byte aligned host memory on cpu. The arena owns its memory: it is
// released when the arena goes out of scope (or earlier by arena_release), on every exit path.
struct Arena {
  Device dev;
  uint8_t* base = nullptr;
  size_t capacity = 0, used = 0;
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& o) noexcept;
  Arena& operator=(Arena&& o) noexcept;
  ~Arena();
};
void arena_reserve(Arena& a, const Device& dev, size_t bytes);  // throws on out of memory
void arena_release(Arena& a);                                   // idempotent
// Carves `count` elements of T (64-byte aligned); throws if the arena is too small.
void* arena_take(Arena& a, size_t bytes);
template <typename T>
T* arena_alloc(Arena& a, size_t count) {
  return static_cast<T*>(arena_take(a, count * sizeof(T)));
}

// Copies between host and the device's memory, ordered on the device's stream (plain memcpy on
// cpu). From pageable host memory (a std::vector) CUDA has read the source by the time
// copy_to_device returns (it stages it, and may wait for the stream to do so), so the source can
// be reused at once; a pinned source must stay untouched until the copy has run, which is what the
// streaming loader's events are for. copy_to_host needs synchronize() before the host reads.
void copy_to_device(const Device& dev, void* dst, const void* src, size_t bytes);
void copy_to_host(const Device& dev, void* dst, const void* src, size_t bytes);
void copy_on_device(const Device& dev, void* dst, const void* src, size_t bytes);
void fill_zero(const Device& dev, void* dst, size_t bytes);
// Waits for the device's stream (no-op on cpu).
void synchronize(const Device& dev);

// Page-locked host memory for the streaming loader's batch slots, so their copies to the GPU are
// true asynchronous DMA. Plain functions, to fit LoaderConfig's allocator hooks.
void* pinned_alloc(size_t bytes);
void pinned_free(void* p);

// Events order the two streams without host syncs: an input batch is copied on the copy stream,
// the compute stream waits for that copy's event, and the copy stream waits for the compute
// stream's "input consumed" event before overwriting the device buffer. The host waits on an
// event only before it reuses a pinned source buffer. On cpu all of these are no-ops (and the
// copy a memcpy).
struct Event {
  void* handle = nullptr;  // cudaEvent_t; owned, destroyed with the Event
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept : handle(o.handle) { o.handle = nullptr; }
  Event& operator=(Event&& o) noexcept;
  ~Event();
};
enum class Lane { compute, copy };
void event_create(const Device& dev, Event& e);
void event_destroy(Event& e);  // idempotent
void event_record(const Device& dev, Event& e, Lane lane);
void stream_wait(const Device& dev, const Event& e, Lane waiting_lane);
void event_synchronize(const Device& dev, const Event& e);  // the host blocks
void copy_to_device_async(const Device& dev, Lane lane, void* dst, const void* src, size_t bytes);

// ---- op dispatch: the ops.h signatures with a Device in front ----------------------------------
void op_conv2d(const Device& d, const ConvShape& s, const float* x, const float* w,
               const float* bias, const float* residual, Act act, float* y);
void op_max_pool2d(const Device& d, const PoolShape& s, const float* x, float* y);
void op_global_avg_pool(const Device& d, int n, int hw, int c, const float* x, float* y);
void op_linear(const Device& d, int n, int in, int out, const float* x, const float* w,
               const float* bias, float* y);
void op_linear_backward(const Device& d, int n, int in, int out, const float* x, const float* w,
                        const float* dy, float* dx, float* dw, float* db);
void op_bias_act(const Device& d, int64_t rows, int c, const float* x, const float* bias,
                 const float* residual, Act act, float* y);
void op_softmax_xent(const Device& d, int n, int c, const float* logits, const int32_t* labels,
                     float smoothing, float grad_scale, float* loss, float* dlogits);
void op_dropout(const Device& d, int64_t count, float p, uint64_t seed, uint64_t counter_base,
                const float* x, float* y);
void op_normalize_u8(const Device& d, int64_t pixels, int c, const uint8_t* x, const float* mean,
                     const float* std, float* y);
void op_sgd_momentum(const Device& d, const ParamRef* params, int num, float lr, float momentum);
void op_adamw(const Device& d, const ParamRef* params, int num, const AdamWConfig& cfg);
void op_confusion_update(const Device& d, int n, int c, const float* logits, const int32_t* labels,
                         int64_t* confusion);
void op_relu_backward(const Device& d, int64_t count, const float* y, float* dy);
void op_gather_rows(const Device& d, int n, int cols, const float* src, const int32_t* rows,
                    float* dst);

// Backward ops (engine/device_backward.cpp). The two reductions take a workspace on cuda (sized by
// op_backward_workspace_bytes, ignored on the cpu); see kernels/ops.h.
size_t op_backward_workspace_bytes(const Device& d, const ConvShape& s);
void op_conv2d_backward_data(const Device& d, const ConvShape& s, const float* dy, const float* w,
                             float* dx);
void op_conv2d_backward_filter(const Device& d, const ConvShape& s, const float* x, const float* dy,
                               float* dw, void* ws, size_t ws_bytes);
void op_bias_grad(const Device& d, int64_t rows, int c, const float* dy, float* db, void* ws,
                  size_t ws_bytes);
void op_act_backward(const Device& d, int64_t count, Act act, const float* y, float* dy);
void op_global_avg_pool_backward(const Device& d, int n, int hw, int c, const float* dy, float* dx);
void op_max_pool2d_backward(const Device& d, const PoolShape& s, const float* x, const float* y,
                            const float* dy, float* dx);
void op_add_inplace(const Device& d, int64_t count, const float* x, float* y);

}  // namespace graft
