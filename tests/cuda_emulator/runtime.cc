// The CUDA emulator's runtime: the part of the CUDA runtime API that kernels/cuda and
// worker/cuda call, defined over host memory (their declarations come from the toolkit's own
// headers, so a signature that drifts fails to compile). One device. Work enqueued on a stream
// waits in one queue, in issue order, until the host synchronises (a stream, an event, a
// synchronous copy): a host read before its synchronisation sees stale data, as on a GPU.
// Copies follow CUDA's rules for host memory: pinned memory (cudaHostAlloc) is read and
// written when the copy runs; pageable memory is read at the call (staged) and written
// synchronously. Stream capture records kernels, copies and memsets into a graph whose launch
// enqueues them again with the same arguments and addresses; the calls CUDA refuses during a
// thread-local capture (cudaMalloc, synchronous copies, synchronising the capturing stream)
// and pageable copies in a capture fail it.
#include "tests/cuda_emulator/runtime.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "tests/cuda_emulator/device.h"
#include "tests/cuda_emulator/scheduler.h"

struct CUgraph_st {
  std::vector<std::function<void()>> nodes;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> nodes;
};
struct CUstream_st {
  CUgraph_st* capture = nullptr;  // non-null while capturing
  bool capture_failed = false;
};
struct CUevent_st {
  bool timing = true;
  bool recorded = false;  // its record has run
  std::chrono::steady_clock::time_point at;
};

namespace tpserve::cuda_emulator {
namespace {

constexpr size_t kDefaultSharedBytes = 48 * 1024;
constexpr int kMaxSharedOptIn = 232448;       // an H100/H200's per-block opt-in limit
constexpr size_t kPoisonLimit = 64ull << 20;  // allocations up to this size start as 0xff

using Op = std::function<void()>;

std::mutex state_mutex;    // the maps, the queue and the kernel attributes
std::mutex execute_mutex;  // one grid (and one flush) at a time
std::deque<Op> queue;
std::map<uintptr_t, size_t> device_allocations;
std::map<uintptr_t, size_t> pinned_allocations;
std::map<const void*, int> max_dynamic_shared;  // per kernel, from cudaFuncSetAttribute
size_t allocated_bytes = 0;
thread_local cudaError_t last_error = cudaSuccess;
thread_local std::vector<cudaStream_t> capturing;  // this thread's captures (thread-local mode)

cudaError_t Report(cudaError_t err) {
  if (err != cudaSuccess) last_error = err;
  return err;
}

size_t TotalBytes() {
  static const size_t total = [] {
    const char* env = std::getenv("TPSERVE_CUDA_EMULATOR_MEMORY_BYTES");
    return env != nullptr ? static_cast<size_t>(std::strtoull(env, nullptr, 10)) : (4ull << 30);
  }();
  return total;
}

bool Within(const std::map<uintptr_t, size_t>& allocations, const void* p, size_t bytes) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  auto it = allocations.upper_bound(address);
  if (it == allocations.begin()) return false;
  --it;
  return address >= it->first && address + bytes <= it->first + it->second;
}

bool IsPinned(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(state_mutex);
  return Within(pinned_allocations, p, bytes);
}

void Flush() {
  std::lock_guard<std::mutex> execute(execute_mutex);
  for (;;) {
    Op op;
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      if (queue.empty()) return;
      op = std::move(queue.front());
      queue.pop_front();
    }
    op();
  }
}

// Fails this thread's captures: the call that did it was one CUDA refuses while capturing.
bool RefusedDuringCapture() {
  if (capturing.empty()) return false;
  for (cudaStream_t s : capturing) s->capture_failed = true;
  return true;
}

// 256-byte aligned like cudaMalloc, but exactly `bytes` long, so that a sanitizer build of the
// emulator reports an access past the end rather than in the rounding.
void* AlignedAllocate(size_t bytes) {
  void* p = nullptr;
  return posix_memalign(&p, 256, std::max<size_t>(bytes, 1)) == 0 ? p : nullptr;
}

// An asynchronous copy on `stream` with CUDA's rules for the host side's memory.
cudaError_t CopyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                      cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyDefault) {
    const bool d = IsDeviceMemory(dst, bytes), s = IsDeviceMemory(src, bytes);
    kind = d ? (s ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
             : (s ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  }
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if ((dst_device && !IsDeviceMemory(dst, bytes)) || (src_device && !IsDeviceMemory(src, bytes))) {
    return Report(cudaErrorInvalidValue);  // a device side outside every cudaMalloc
  }
  const bool host_pageable =
      (!dst_device && !IsPinned(dst, bytes)) || (!src_device && !IsPinned(src, bytes));
  const bool in_capture = stream != nullptr && stream->capture != nullptr;
  if (in_capture && host_pageable) {
    stream->capture_failed = true;
    return Report(cudaErrorStreamCaptureUnsupported);
  }
  if (host_pageable && !dst_device) {  // to pageable memory: synchronous
    Flush();
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
  }
  if (host_pageable) {  // from pageable memory: staged now
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    EnqueueWork(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
    return cudaSuccess;
  }
  EnqueueWork(stream, [dst, src, bytes] { std::memcpy(dst, src, bytes); });
  return cudaSuccess;
}

}  // namespace

void EnqueueWork(cudaStream_t stream, std::function<void()> op) {
  if (stream != nullptr && stream->capture != nullptr) {
    stream->capture->nodes.push_back(std::move(op));
    return;
  }
  std::lock_guard<std::mutex> lock(state_mutex);
  queue.push_back(std::move(op));
}

bool IsDeviceMemory(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(state_mutex);
  return Within(device_allocations, p, bytes);
}
cudaError_t EnqueueKernel(const LaunchShape& shape, cudaStream_t stream,
                          std::function<void()> body) {
  const dim3 b = shape.block, g = shape.grid;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 || g.x == 0 ||
      g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    return Report(cudaErrorInvalidConfiguration);
  }
  if (shape.shared_bytes > kDefaultSharedBytes) {
    std::lock_guard<std::mutex> lock(state_mutex);
    auto it = max_dynamic_shared.find(shape.kernel);
    if (it == max_dynamic_shared.end() || shape.shared_bytes > static_cast<size_t>(it->second)) {
      return Report(cudaErrorInvalidValue);  // over 48 KiB needs the kernel's opt-in
    }
  }
  EnqueueWork(stream, [shape, body = std::move(body)] { RunGrid(shape, body); });
  return cudaSuccess;
}

}  // namespace tpserve::cuda_emulator

namespace emu = tpserve::cuda_emulator;

// ------------------------------------ errors ------------------------------------

cudaError_t cudaGetLastError() {
  const cudaError_t err = emu::last_error;
  emu::last_error = cudaSuccess;
  return err;
}
cudaError_t cudaPeekAtLastError() { return emu::last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    default:
      return "cudaError (other)";
  }
}
const char* cudaGetErrorString(cudaError_t error) { return cudaGetErrorName(error); }

// ------------------------------------ device ------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : emu::Report(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return emu::Report(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "tpserve CUDA emulator");
  prop->totalGlobalMem = emu::TotalBytes();
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->sharedMemPerBlock = emu::kDefaultSharedBytes;
  prop->sharedMemPerBlockOptin = emu::kMaxSharedOptIn;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return emu::Report(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = emu::kMaxSharedOptIn;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    default:
      return emu::Report(cudaErrorInvalidValue);
  }
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > emu::kMaxSharedOptIn) return emu::Report(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(emu::state_mutex);
    emu::max_dynamic_shared[func] = value;
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
    return value >= -1 && value <= 100 ? cudaSuccess : emu::Report(cudaErrorInvalidValue);
  }
  return emu::Report(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceSynchronize() {
  if (emu::RefusedDuringCapture()) return emu::Report(cudaErrorStreamCaptureUnsupported);
  emu::Flush();
  return cudaSuccess;
}

// ------------------------------------ memory ------------------------------------

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  std::lock_guard<std::mutex> lock(emu::state_mutex);
  *total = emu::TotalBytes();
  *free = *total - std::min(*total, emu::allocated_bytes);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = nullptr;
  if (emu::RefusedDuringCapture()) return emu::Report(cudaErrorStreamCaptureUnsupported);
  {
    std::lock_guard<std::mutex> lock(emu::state_mutex);
    if (emu::allocated_bytes + bytes > emu::TotalBytes()) {
      return emu::Report(cudaErrorMemoryAllocation);
    }
  }
  void* p = emu::AlignedAllocate(bytes);
  if (p == nullptr) return emu::Report(cudaErrorMemoryAllocation);
  if (bytes <= emu::kPoisonLimit) std::memset(p, 0xff, bytes);
  std::lock_guard<std::mutex> lock(emu::state_mutex);
  emu::device_allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  emu::allocated_bytes += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  emu::Flush();  // a free waits for the device's work, as CUDA's does
  std::lock_guard<std::mutex> lock(emu::state_mutex);
  auto it = emu::device_allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == emu::device_allocations.end()) return emu::Report(cudaErrorInvalidValue);
  emu::allocated_bytes -= it->second;
  emu::device_allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int /*flags*/) {
  void* p = emu::AlignedAllocate(bytes);
  if (p == nullptr) return emu::Report(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(emu::state_mutex);
  emu::pinned_allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  emu::Flush();
  std::lock_guard<std::mutex> lock(emu::state_mutex);
  auto it = emu::pinned_allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == emu::pinned_allocations.end()) return emu::Report(cudaErrorInvalidValue);
  emu::pinned_allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return emu::CopyAsync(dst, src, bytes, kind, stream);
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (emu::RefusedDuringCapture()) return emu::Report(cudaErrorStreamCaptureUnsupported);
  const cudaError_t err = emu::CopyAsync(dst, src, bytes, kind, nullptr);
  emu::Flush();
  return err;
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  if (width > dpitch || width > spitch) return emu::Report(cudaErrorInvalidValue);
  for (size_t row = 0; row < height; ++row) {
    const cudaError_t err =
        emu::CopyAsync(static_cast<char*>(dst) + row * dpitch,
                       static_cast<const char*>(src) + row * spitch, width, kind, stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!emu::IsDeviceMemory(dst, bytes)) return emu::Report(cudaErrorInvalidValue);
  emu::EnqueueWork(stream, [dst, value, bytes] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (emu::RefusedDuringCapture()) return emu::Report(cudaErrorStreamCaptureUnsupported);
  const cudaError_t err = cudaMemsetAsync(dst, value, bytes, nullptr);
  emu::Flush();
  return err;
}

// --------------------------------- streams, events ---------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int /*flags*/) {
  *stream = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (stream == nullptr) return emu::Report(cudaErrorInvalidValue);
  delete stream->capture;
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (stream != nullptr && stream->capture != nullptr) {
    stream->capture_failed = true;
    return emu::Report(cudaErrorStreamCaptureUnsupported);
  }
  if (emu::RefusedDuringCapture()) return emu::Report(cudaErrorStreamCaptureUnsupported);
  emu::Flush();
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  *event = new CUevent_st;
  (*event)->timing = (flags & cudaEventDisableTiming) == 0;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  emu::Flush();  // a pending record must not stamp a freed event
  delete event;
  return cudaSuccess;
}
// Work runs in issue order across streams, so an event adds no ordering of its own: a record
// stamps the host clock when its turn comes; waiting only checks its argument.
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (event == nullptr) return emu::Report(cudaErrorInvalidResourceHandle);
  emu::EnqueueWork(stream, [event] {
    event->at = std::chrono::steady_clock::now();
    event->recorded = true;
  });
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t /*stream*/, cudaEvent_t event, unsigned int) {
  return event != nullptr ? cudaSuccess : emu::Report(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (event == nullptr) return emu::Report(cudaErrorInvalidResourceHandle);
  emu::Flush();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (start == nullptr || end == nullptr || !start->timing || !end->timing) {
    return emu::Report(cudaErrorInvalidResourceHandle);
  }
  if (!start->recorded || !end->recorded) return emu::Report(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

// ------------------------------------ graphs ------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode /*mode*/) {
  if (stream == nullptr || stream->capture != nullptr) return emu::Report(cudaErrorIllegalState);
  stream->capture = new CUgraph_st;
  stream->capture_failed = false;
  emu::capturing.push_back(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (stream == nullptr || stream->capture == nullptr) return emu::Report(cudaErrorIllegalState);
  auto& mine = emu::capturing;
  mine.erase(std::remove(mine.begin(), mine.end(), stream), mine.end());
  std::unique_ptr<CUgraph_st> captured(stream->capture);
  stream->capture = nullptr;
  if (stream->capture_failed) return emu::Report(cudaErrorStreamCaptureInvalidated);
  *graph = captured.release();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long /*flags*/) {
  if (graph == nullptr) return emu::Report(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return emu::Report(cudaErrorInvalidValue);
  for (const emu::Op& node : exec->nodes) emu::EnqueueWork(stream, node);
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
