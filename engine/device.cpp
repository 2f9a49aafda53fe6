#include "engine/device.h"

#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "engine/dispatch.h"
#include "kernels/cpu/cpu_path.h"

#ifdef GRAFT_HAVE_CUDA
#include "kernels/cuda/check.h"
#include "kernels/cuda/kernel_image.h"
#endif

namespace graft {

namespace {

int g_gpu = 0;

#ifdef GRAFT_HAVE_CUDA
// The CMake setting that builds for the selected card, e.g. -DCMAKE_CUDA_ARCHITECTURES=86.
std::string rebuild_hint() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, g_gpu) != cudaSuccess) return "";
  return "; rebuild graft for it with -DCMAKE_CUDA_ARCHITECTURES=" + std::to_string(prop.major) +
         std::to_string(prop.minor) + " (or configure on this machine, which builds for its GPUs)";
}
#endif

}  // namespace

void select_gpu(int index) {
  if (index < 0) throw std::invalid_argument("--gpu must be >= 0, not " + std::to_string(index));
  g_gpu = index;
}

int selected_gpu() {
  return g_gpu;
}

bool cuda_available(std::string* why) {
#ifdef GRAFT_HAVE_CUDA
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess && err != cudaErrorNoDevice) {
    cudaGetLastError();
    if (why) *why = std::string("CUDA is unusable: ") + cudaGetErrorString(err);
    return false;
  }
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    if (why) *why = "no CUDA device";
    return false;
  }
  if (g_gpu >= count) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    if (why)
      *why = "--gpu " + std::to_string(g_gpu) + ": there " +
             (count == 1 ? "is 1 CUDA device" : "are " + std::to_string(count) + " CUDA devices") +
             (visible ? std::string(" (CUDA_VISIBLE_DEVICES=") + visible + ")" : "") +
             ", numbered from 0";
    return false;
  }
  err = cudaSetDevice(g_gpu);
  if (err != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = "GPU " + std::to_string(g_gpu) + ": " + cudaGetErrorString(err);
    return false;
  }
  if (!cuda::kernel_image_available(why)) {
    if (why) *why += rebuild_hint();
    return false;
  }
  return true;
#else
  if (why) *why = "this build has no CUDA backend (nvcc was not found at configure time)";
  return false;
#endif
}

Device make_device(const std::string& name) {
  Device dev;
  std::string why;
  if (name == "cpu") return dev;
  if (name != "auto" && name != "cuda")
    throw std::invalid_argument("--device must be auto, cpu or cuda, not '" + name + "'");
#if GRAFT_CUDA_EMULATION
  // The emulated device runs CUDA kernels on the CPU for testing, far slower than the CPU path:
  // it is used when asked for by name only.
  if (name == "auto") return dev;
#endif
  if (!cuda_available(&why)) {
    if (name == "cuda") throw std::runtime_error("--device cuda: " + why);
    // A --gpu that names no card is a mistake in the command, not a reason to fall back.
    if (why.rfind("--gpu", 0) == 0) throw std::runtime_error(why);
#ifdef GRAFT_HAVE_CUDA
    // A machine without an NVIDIA driver takes the CPU without comment; where the driver is loaded,
    // a GPU this build cannot use (or a driver too old for it) is worth a line, since the user
    // probably expected the GPU to be used.
    if (why != "no CUDA device" && access("/proc/driver/nvidia/version", F_OK) == 0)
      std::fprintf(stderr, "graft: warning: running on the CPU: %s\n", why.c_str());
#endif
    return dev;
  }
#ifdef GRAFT_HAVE_CUDA
  dev.kind = DeviceKind::cuda;
  dev.gpu = g_gpu;
  CUDA_CHECK(cudaSetDevice(dev.gpu));
  auto streams = std::make_shared<DeviceStreams>();
  CUDA_CHECK(cudaStreamCreateWithFlags(&streams->compute, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&streams->copy, cudaStreamNonBlocking));
  dev.stream = streams->compute;
  dev.copy_stream = streams->copy;
  dev.owner = std::move(streams);
#endif
  return dev;
}

DeviceStreams::~DeviceStreams() {
#ifdef GRAFT_HAVE_CUDA
  // Work still queued on a stream finishes first: destroying a stream does not cancel it.
  if (compute) cudaStreamDestroy(compute);
  if (copy) cudaStreamDestroy(copy);
#endif
}

std::string device_name(const Device& dev) {
#ifdef GRAFT_HAVE_CUDA
  if (dev.is_cuda()) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev.gpu));
    return prop.name;
  }
#endif
  (void)dev;
  return "cpu (" + std::string(cpu::cpu_path_name(cpu::cpu_path())) + ", " +
         std::to_string(omp_get_max_threads()) + " threads)";
}

size_t device_free_memory(const Device& dev) {
#ifdef GRAFT_HAVE_CUDA
  if (dev.is_cuda()) {
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return free;
  }
#endif
  (void)dev;
  return size_t(sysconf(_SC_AVPHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
}

void arena_reserve(Arena& a, const Device& dev, size_t bytes) {
  arena_release(a);
  a.dev = dev;
  bytes = (bytes + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  if (dev.is_cuda()) {
#ifdef GRAFT_HAVE_CUDA
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      throw std::runtime_error("cannot allocate " + std::to_string(bytes >> 20) +
                               " MiB on the GPU (" + cudaGetErrorString(err) +
                               "); lower --batch-size");
    }
    a.base = static_cast<uint8_t*>(p);
#endif
  } else {
    a.base = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
    if (!a.base)
      throw std::runtime_error("cannot allocate " + std::to_string(bytes >> 20) +
                               " MiB of memory; lower --batch-size");
  }
  a.capacity = bytes;
  a.used = 0;
}

Arena::Arena(Arena&& o) noexcept : dev(o.dev), base(o.base), capacity(o.capacity), used(o.used) {
  o.base = nullptr;
  o.capacity = o.used = 0;
}

Arena& Arena::operator=(Arena&& o) noexcept {
  if (this != &o) {
    arena_release(*this);
    dev = o.dev, base = o.base, capacity = o.capacity, used = o.used;
    o.base = nullptr;
    o.capacity = o.used = 0;
  }
  return *this;
}

Arena::~Arena() {
  arena_release(*this);
}

void arena_release(Arena& a) {
  if (a.base) {
#ifdef GRAFT_HAVE_CUDA
    if (a.dev.is_cuda()) cudaFree(a.base);
#endif
    if (!a.dev.is_cuda()) std::free(a.base);
  }
  a.base = nullptr;
  a.capacity = a.used = 0;
}

void* arena_take(Arena& a, size_t bytes) {
  size_t aligned = (bytes + 63) / 64 * 64;
  if (a.used + aligned > a.capacity)
    throw std::logic_error("arena too small: " + std::to_string(a.used + aligned) + " > " +
                           std::to_string(a.capacity) + " bytes");
  void* p = a.base + a.used;
  a.used += aligned;
  return p;
}

void copy_to_device(const Device& dev, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  GRAFT_DISPATCH(dev, std::memcpy(dst, src, bytes),
                 CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, dev.stream)));
}
void copy_to_host(const Device& dev, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  GRAFT_DISPATCH(dev, std::memcpy(dst, src, bytes),
                 CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, dev.stream)));
}
void copy_on_device(const Device& dev, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  GRAFT_DISPATCH(
      dev, std::memmove(dst, src, bytes),
      CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, dev.stream)));
}
void fill_zero(const Device& dev, void* dst, size_t bytes) {
  if (bytes == 0) return;
  GRAFT_DISPATCH(dev, std::memset(dst, 0, bytes),
                 CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, dev.stream)));
}
void synchronize(const Device& dev) {
  GRAFT_DISPATCH(dev, (void)0, CUDA_CHECK(cudaStreamSynchronize(dev.stream)));
}

void* pinned_alloc(size_t bytes) {
#ifdef GRAFT_HAVE_CUDA
  void* p = nullptr;
  if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) == cudaSuccess) return p;
  cudaGetLastError();
  return nullptr;  // the loader reports the failed allocation
#else
  return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
#endif
}

void pinned_free(void* p) {
#ifdef GRAFT_HAVE_CUDA
  if (p) cudaFreeHost(p);
#else
  std::free(p);
#endif
}

void event_create(const Device& dev, Event& e) {
  GRAFT_DISPATCH(dev, e.handle = nullptr, {
    cudaEvent_t h;
    CUDA_CHECK(cudaEventCreateWithFlags(&h, cudaEventDisableTiming));
    e.handle = h;
  });
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    event_destroy(*this);
    handle = o.handle;
    o.handle = nullptr;
  }
  return *this;
}

Event::~Event() {
  event_destroy(*this);
}

void event_destroy(Event& e) {
#ifdef GRAFT_HAVE_CUDA
  if (e.handle) cudaEventDestroy(static_cast<cudaEvent_t>(e.handle));
#endif
  e.handle = nullptr;
}

void event_record(const Device& dev, Event& e, [[maybe_unused]] Lane lane) {
  GRAFT_DISPATCH(dev, (void)e,
                 CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e.handle),
                                            lane == Lane::copy ? dev.copy_stream : dev.stream)));
}

void stream_wait(const Device& dev, const Event& e, [[maybe_unused]] Lane waiting_lane) {
  GRAFT_DISPATCH(
      dev, (void)e,
      CUDA_CHECK(cudaStreamWaitEvent(waiting_lane == Lane::copy ? dev.copy_stream : dev.stream,
                                     static_cast<cudaEvent_t>(e.handle), 0)));
}

void event_synchronize(const Device& dev, const Event& e) {
  GRAFT_DISPATCH(dev, (void)e,
                 CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e.handle))));
}

void copy_to_device_async(const Device& dev, [[maybe_unused]] Lane lane, void* dst, const void* src,
                          size_t bytes) {
  if (bytes == 0) return;
  GRAFT_DISPATCH(dev, std::memcpy(dst, src, bytes),
                 CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
                                            lane == Lane::copy ? dev.copy_stream : dev.stream)));
}

void op_conv2d(const Device& d, const ConvShape& s, const float* x, const float* w,
               const float* bias, const float* residual, Act act, float* y) {
  GRAFT_DISPATCH(d, cpu::conv2d(s, x, w, bias, residual, act, y),
                 cuda::conv2d(s, x, w, bias, residual, act, y, d.stream));
}
void op_max_pool2d(const Device& d, const PoolShape& s, const float* x, float* y) {
  GRAFT_DISPATCH(d, cpu::max_pool2d(s, x, y), cuda::max_pool2d(s, x, y, d.stream));
}
void op_global_avg_pool(const Device& d, int n, int hw, int c, const float* x, float* y) {
  GRAFT_DISPATCH(d, cpu::global_avg_pool(n, hw, c, x, y),
                 cuda::global_avg_pool(n, hw, c, x, y, d.stream));
}
void op_linear(const Device& d, int n, int in, int out, const float* x, const float* w,
               const float* bias, float* y) {
  GRAFT_DISPATCH(d, cpu::linear(n, in, out, x, w, bias, y),
                 cuda::linear(n, in, out, x, w, bias, y, d.stream));
}
void op_linear_backward(const Device& d, int n, int in, int out, const float* x, const float* w,
                        const float* dy, float* dx, float* dw, float* db) {
  GRAFT_DISPATCH(d, cpu::linear_backward(n, in, out, x, w, dy, dx, dw, db),
                 cuda::linear_backward(n, in, out, x, w, dy, dx, dw, db, d.stream));
}
void op_bias_act(const Device& d, int64_t rows, int c, const float* x, const float* bias,
                 const float* residual, Act act, float* y) {
  GRAFT_DISPATCH(d, cpu::bias_act(rows, c, x, bias, residual, act, y),
                 cuda::bias_act(rows, c, x, bias, residual, act, y, d.stream));
}
void op_softmax_xent(const Device& d, int n, int c, const float* logits, const int32_t* labels,
                     float smoothing, float grad_scale, float* loss, float* dlogits) {
  GRAFT_DISPATCH(
      d, cpu::softmax_xent(n, c, logits, labels, smoothing, grad_scale, loss, dlogits),
      cuda::softmax_xent(n, c, logits, labels, smoothing, grad_scale, loss, dlogits, d.stream));
}
void op_dropout(const Device& d, int64_t count, float p, uint64_t seed, uint64_t counter_base,
                const float* x, float* y) {
  GRAFT_DISPATCH(d, cpu::dropout(count, p, seed, counter_base, x, y),
                 cuda::dropout(count, p, seed, counter_base, x, y, d.stream));
}
void op_normalize_u8(const Device& d, int64_t pixels, int c, const uint8_t* x, const float* mean,
                     const float* std, float* y) {
  GRAFT_DISPATCH(d, cpu::normalize_u8(pixels, c, x, mean, std, y),
                 cuda::normalize_u8(pixels, c, x, mean, std, y, d.stream));
}
void op_sgd_momentum(const Device& d, const ParamRef* params, int num, float lr, float momentum) {
  GRAFT_DISPATCH(d, cpu::sgd_momentum(params, num, lr, momentum),
                 cuda::sgd_momentum(params, num, lr, momentum, d.stream));
}
void op_adamw(const Device& d, const ParamRef* params, int num, const AdamWConfig& cfg) {
  GRAFT_DISPATCH(d, cpu::adamw(params, num, cfg), cuda::adamw(params, num, cfg, d.stream));
}
void op_confusion_update(const Device& d, int n, int c, const float* logits, const int32_t* labels,
                         int64_t* confusion) {
  GRAFT_DISPATCH(d, cpu::confusion_update(n, c, logits, labels, confusion),
                 cuda::confusion_update(n, c, logits, labels, confusion, d.stream));
}
void op_relu_backward(const Device& d, int64_t count, const float* y, float* dy) {
  GRAFT_DISPATCH(d, cpu::relu_backward(count, y, dy), cuda::relu_backward(count, y, dy, d.stream));
}
void op_gather_rows(const Device& d, int n, int cols, const float* src, const int32_t* rows,
                    float* dst) {
  GRAFT_DISPATCH(d, cpu::gather_rows(n, cols, src, rows, dst),
                 cuda::gather_rows(n, cols, src, rows, dst, d.stream));
}

}  // namespace graft
