#pragma once
// CUDA's execution model for the host compiler: what kernels/cuda/*.cu and graft's CUDA paths see
// in place of <cuda_runtime.h> when graft is configured with -DGRAFT_CUDA_EMULATION=ON. See
// kernels/emu/README.md for what is modelled and what is not.
//
// A kernel is an ordinary C++ function. A launch runs the grid's blocks one after another (in a
// shuffled order); a block's threads are fibers that run until they reach a barrier or a warp
// operation, in an order shuffled between barriers. Everything here is single-threaded per launch
// and launches are serialised, so "device" memory is plain host memory.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef GRAFT_CUDA_EMULATION
#define GRAFT_CUDA_EMULATION 1
#endif

// ---- Qualifiers --------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__
// Block-scope `__shared__` arrays become statics in one section, so the runtime can find them all
// (between the linker's __start_ and __stop_ symbols) to fill them with NaN before every block and
// to tell shared-memory accesses from others. Blocks run one at a time, so one copy is enough.
#define __shared__ __attribute__((section("graft_shared"))) static

// ---- Vector types ------------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

namespace graft::emu {
// A 16-byte access at an address that is not a multiple of 16: the GPU faults
// (cudaErrorMisalignedAddress). The vector types below check every load and store through them.
void misaligned(const void* p, size_t align);
template <size_t A>
inline void check_aligned(const void* p) {
  // The compiler may assume a float4& is 16-byte aligned and fold the test away; the empty asm
  // hides where the address came from.
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  asm("" : "+r"(a));
  if (a & (A - 1)) misaligned(p, A);
}
}  // namespace graft::emu

// The 16-byte vector types check their alignment whenever they are read or written through a
// reference (`*reinterpret_cast<const float4*>(p)`), which is how a GPU load or store of one is
// written. Copying a float4 that lives in a register (a local) checks a local, which is aligned.
// Element by element, not memcpy: the race check sees plain loads and stores, not a memcpy call.
#define GRAFT_EMU_VEC4(T, E)                                    \
  struct alignas(16) T {                                        \
    E x, y, z, w;                                               \
    T() = default;                                              \
    constexpr T(E a, E b, E c, E d) : x(a), y(b), z(c), w(d) {} \
    T(const T& o) {                                             \
      ::graft::emu::check_aligned<16>(&o);                      \
      x = o.x, y = o.y, z = o.z, w = o.w;                       \
    }                                                           \
    T& operator=(const T& o) {                                  \
      ::graft::emu::check_aligned<16>(this);                    \
      ::graft::emu::check_aligned<16>(&o);                      \
      x = o.x, y = o.y, z = o.z, w = o.w;                       \
      return *this;                                             \
    }                                                           \
  };                                                            \
  inline T make_##T(E a, E b, E c, E d) {                       \
    return T(a, b, c, d);                                       \
  }
GRAFT_EMU_VEC4(float4, float)
GRAFT_EMU_VEC4(int4, int)
GRAFT_EMU_VEC4(uint4, unsigned)
#undef GRAFT_EMU_VEC4
struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float a, float b) {
  return {a, b};
}

// ---- Runtime types -----------------------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidSymbol = 13,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
};
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
typedef struct CUgraph_st* cudaGraph_t;
typedef struct CUgraphExec_st* cudaGraphExec_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaDeviceAttr { cudaDevAttrMaxThreadsPerBlock = 1, cudaDevAttrMultiProcessorCount = 16 };
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;
constexpr unsigned cudaHostAllocDefault = 0;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  size_t totalConstMem;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major;
  int minor;
  int multiProcessorCount;
  int l2CacheSize;
  int maxThreadsPerMultiProcessor;
};
struct cudaFuncAttributes {
  size_t sharedSizeBytes;
  size_t constSizeBytes;
  size_t localSizeBytes;
  int maxThreadsPerBlock;
  int numRegs;
  int ptxVersion;
  int binaryVersion;
  int maxDynamicSharedSizeBytes;
};

// ---- Runtime API (kernels/emu/runtime.cpp) -----------------------------------------------------
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int dev);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaMemGetInfo(size_t* free, size_t* total);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned flags);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);

// The typed overloads CUDA's runtime header has.
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <class T>
cudaError_t cudaHostAlloc(T** p, size_t bytes, unsigned flags) {
  return cudaHostAlloc(reinterpret_cast<void**>(p), bytes, flags);
}
template <class T>
cudaError_t cudaMallocHost(T** p, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(p), bytes);
}

namespace graft::emu {
// Runs `op` on `stream` (at once, in issue order), or records it while the stream is captured.
cudaError_t submit(cudaStream_t stream, std::function<void()> op);
cudaError_t symbol_copy(void* dst, size_t dst_size, const void* src, size_t count, size_t offset,
                        cudaMemcpyKind kind, cudaStream_t stream);
void set_last_error(cudaError_t err, const char* detail);
}  // namespace graft::emu

template <class T>
cudaError_t cudaMemcpyToSymbolAsync(T& symbol, const void* src, size_t count, size_t offset = 0,
                                    cudaMemcpyKind kind = cudaMemcpyHostToDevice,
                                    cudaStream_t stream = nullptr) {
  return graft::emu::symbol_copy(&symbol, sizeof(T), src, count, offset, kind, stream);
}
template <class T>
cudaError_t cudaMemcpyToSymbol(T& symbol, const void* src, size_t count, size_t offset = 0,
                               cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  return graft::emu::symbol_copy(&symbol, sizeof(T), src, count, offset, kind, nullptr);
}
template <class F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F*) {
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = 1024;
  attr->maxDynamicSharedSizeBytes = 48 * 1024;
  attr->ptxVersion = attr->binaryVersion = 90;
  return cudaSuccess;
}

// ---- Threads, blocks, launches (kernels/emu/scheduler.cpp) -------------------------------------
namespace graft::emu {

struct Thread;  // one CUDA thread: its fiber, indices and warp-operation slot
struct Block;   // the running block: its index, shared memory and barrier count
struct Grid;    // the running launch: its shape and name

extern thread_local Thread* g_thread;
extern thread_local const Block* g_block;
extern thread_local const Grid* g_grid;
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

// Byte address of the running block's dynamic shared memory (what `extern __shared__ T x[]`
// names on a GPU), 128-byte aligned.
void* dynamic_shared();

// Runs a kernel over the grid on `stream`: `body` (the kernel called with its arguments) runs once
// per thread. A launch outside the limits sets the last error instead, as CUDA does.
void launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
            std::function<void()> body);

// What a kernel launch looks like from the call site (GRAFT_LAUNCH in kernels/cuda/common.cuh):
// the arguments are converted to the kernel's parameter types and copied, as a launch does.
template <class... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  const char* name;
  Launch(void (*k)(P...), dim3 g, dim3 b, size_t smem, cudaStream_t s, const char* n)
      : kernel(k), grid(g), block(b), shared_bytes(smem), stream(s), name(n) {}
  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong argument count");
    auto k = kernel;
    std::tuple<std::decay_t<P>...> pack(std::forward<A>(args)...);
    launch(name, grid, block, shared_bytes, stream, [k, pack]() { std::apply(k, pack); });
  }
};

// Warp operations (fiber rendezvous of the lanes named in `mask`).
enum class WarpOpKind { shfl, shfl_up, shfl_down, shfl_xor, ballot, any, all, sync };
uint64_t warp_op(WarpOpKind kind, unsigned mask, uint64_t value, int arg, int width);
void syncthreads();

}  // namespace graft::emu

#define threadIdx (::graft::emu::thread_idx())
#define blockIdx (::graft::emu::block_idx())
#define blockDim (::graft::emu::block_dim())
#define gridDim (::graft::emu::grid_dim())
constexpr int warpSize = 32;

inline void __syncthreads() {
  graft::emu::syncthreads();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  graft::emu::warp_op(graft::emu::WarpOpKind::sync, mask, 0, 0, 32);
}
inline void __threadfence() {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

namespace graft::emu {
template <class T>
inline T warp_exchange(WarpOpKind kind, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a 1-8 byte value");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_op(kind, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace graft::emu

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return graft::emu::warp_exchange(graft::emu::WarpOpKind::shfl, mask, v, src, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return graft::emu::warp_exchange(graft::emu::WarpOpKind::shfl_up, mask, v, int(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return graft::emu::warp_exchange(graft::emu::WarpOpKind::shfl_down, mask, v, int(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return graft::emu::warp_exchange(graft::emu::WarpOpKind::shfl_xor, mask, v, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(graft::emu::warp_op(graft::emu::WarpOpKind::ballot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
  return int(graft::emu::warp_op(graft::emu::WarpOpKind::any, mask, pred != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int pred) {
  return int(graft::emu::warp_op(graft::emu::WarpOpKind::all, mask, pred != 0, 0, 32));
}

// ---- Atomics: a block's threads are fibers of one host thread, so a plain read-modify-write is
// atomic. Kept out of line so the shared-memory race check does not see them as plain accesses.
#define GRAFT_EMU_ATOMIC_ADD(T)                             \
  __attribute__((noinline)) inline T atomicAdd(T* p, T v) { \
    T old = *p;                                             \
    *p = old + v;                                           \
    return old;                                             \
  }
GRAFT_EMU_ATOMIC_ADD(int)
GRAFT_EMU_ATOMIC_ADD(unsigned)
GRAFT_EMU_ATOMIC_ADD(unsigned long long)
GRAFT_EMU_ATOMIC_ADD(float)
#undef GRAFT_EMU_ATOMIC_ADD
__attribute__((noinline)) inline int atomicMax(int* p, int v) {
  int old = *p;
  if (v > old) *p = v;
  return old;
}
__attribute__((noinline)) inline int atomicCAS(int* p, int cmp, int v) {
  int old = *p;
  if (old == cmp) *p = v;
  return old;
}

// ---- Math: the host's functions (see README.md for how they differ from the GPU's) -------------
#include <cmath>
using std::fmaf;
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
// CUDA's min and max overloads of the arithmetic types.
#define GRAFT_EMU_MINMAX(T) \
  inline T min(T a, T b) {  \
    return b < a ? b : a;   \
  }                         \
  inline T max(T a, T b) {  \
    return a < b ? b : a;   \
  }
GRAFT_EMU_MINMAX(int)
GRAFT_EMU_MINMAX(unsigned)
GRAFT_EMU_MINMAX(long)
GRAFT_EMU_MINMAX(unsigned long)
GRAFT_EMU_MINMAX(long long)
GRAFT_EMU_MINMAX(unsigned long long)
#undef GRAFT_EMU_MINMAX
inline float min(float a, float b) {
  return std::fmin(a, b);
}
inline float max(float a, float b) {
  return std::fmax(a, b);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float rsqrtf(float x) {
  return 1.f / std::sqrt(x);
}
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
inline int __float_as_int(float f) {
  int v;
  std::memcpy(&v, &f, 4);
  return v;
}
