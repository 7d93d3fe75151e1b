// The pieces of the CUDA runtime that code outside kernels/cuda needs to drive the ops of
// cuda_ops.h (layer: kernels/cuda; a plain C++ header: no CUDA types, so callers such as
// worker/cuda need no CUDA headers and no CUDA language): an owning non-blocking stream, pinned
// host memory, events, CUDA-graph capture and replay, asynchronous copies and memsets, and the
// device selection and queries. Device memory (DeviceBuffer), stream synchronisation and the
// device count are in cuda_status.h. Only what the worker's compute uses; add to it as needed.
//
// Every error is a Status from CudaErrorToStatus (cuda_status.h), whose message starts with
// the runtime call ("cudaMemcpyAsync host to device: cudaErrorInvalidValue: ..."), so a caller
// prefixes its own context. A failed call also clears the runtime's per-thread "last error"
// (a sticky one stays), so that it does not resurface as the failure of the next kernel
// launch, whose launcher reads cudaGetLastError. Nothing here aborts; without a GPU or driver
// every call that reaches the runtime returns an error (Unavailable for no device or driver).
// Threading: every function may be called from any thread; the runtime's "current device" is
// per thread (SetDevice), and a stream, event or graph belongs to the device that was current
// when it was created. An object here is used by one thread at a time.
#pragma once

#include <cstddef>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_types.h"

namespace tpserve::kernels::cuda {

// ------------------------------------- device -----------------------------------------------

// Makes `device` the calling thread's current device (cudaSetDevice): later streams,
// allocations and launches of this thread go to it. Synchronous, cheap. InvalidArgument for
// an ordinal that does not exist; Unavailable without a usable driver.
[[nodiscard]] absl::Status SetDevice(int device);

// Free and total memory of the calling thread's current device, in bytes (cudaMemGetInfo;
// "free" counts every process's allocations). Synchronous.
struct DeviceMemoryInfo {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};
[[nodiscard]] absl::StatusOr<DeviceMemoryInfo> DeviceMemory();

// The number of streaming multiprocessors of device `device` (an attribute query: synchronous,
// does not change the current device).
[[nodiscard]] absl::StatusOr<int> MultiprocessorCount(int device);

// ------------------------------------- streams ----------------------------------------------

// Owns one non-blocking stream (cudaStreamNonBlocking: it does not wait for, nor is waited for
// by, the legacy default stream) on the device current at Create(). Move-only. The destructor
// destroys the stream without waiting: work already queued still completes, but the caller
// must synchronise first if it needs the results or if memory that work uses is freed next.
class OwnedStream {
 public:
  OwnedStream() = default;  // owns nothing; get() is the legacy default stream
  // Creates the stream on the calling thread's current device (synchronous).
  [[nodiscard]] static absl::StatusOr<OwnedStream> Create();

  OwnedStream(OwnedStream&& other) noexcept;
  OwnedStream& operator=(OwnedStream&& other) noexcept;
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  ~OwnedStream();

  // The stream, for the ops and the functions below; valid while this object owns it.
  Stream get() const { return Stream{handle_}; }

 private:
  void* handle_ = nullptr;  // cudaStream_t
};

// ------------------------------------- host memory ------------------------------------------

// Page-locked host memory (cudaHostAlloc), so that asynchronous copies from and to it are truly
// asynchronous. Grow-only: Reserve() replaces the allocation with a larger one and keeps no
// contents. Move-only; the destructor frees it (a failure to free is ignored). The caller must
// not grow or destroy it while a queued copy still reads or writes it.
class PinnedHostBuffer {
 public:
  PinnedHostBuffer() = default;
  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;
  ~PinnedHostBuffer();

  // Makes size() >= bytes: nothing happens when it already is; otherwise the old memory is
  // freed first and exactly `bytes` are allocated (uninitialised). On error the buffer is
  // empty (data() null, size() 0): ResourceExhausted when the host cannot pin that much.
  // Synchronous.
  [[nodiscard]] absl::Status Reserve(size_t bytes);

  unsigned char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

// ------------------------------------- events -----------------------------------------------

// Owns one event without timing (cudaEventDisableTiming) on the device current at Create():
// a marker in a stream that the host, or another stream, can wait for. Move-only; the
// destructor destroys it (a pending event may be destroyed: the runtime releases it once
// reached).
class Event {
 public:
  Event() = default;  // owns nothing: Record, Synchronize, MakeStreamWait: FailedPrecondition
  // Creates the event on the calling thread's current device (synchronous).
  [[nodiscard]] static absl::StatusOr<Event> Create();

  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  // Asynchronous: marks the point of `stream` reached once all work queued on it so far is
  // done (re-recording moves the mark).
  [[nodiscard]] absl::Status Record(Stream stream);
  // Blocks the calling thread until the last recorded point is reached; returns at once when
  // the event was never recorded. Reports the first error of the work it waited for.
  [[nodiscard]] absl::Status Synchronize();
  // Asynchronous, for ordering work across streams without the host: work queued on
  // `stream` after this call starts only once the event's last recorded point (at the time of
  // this call; re-recording later does not move it) is reached (cudaStreamWaitEvent). An event
  // never recorded makes no wait. The host returns at once.
  [[nodiscard]] absl::Status MakeStreamWait(Stream stream) const;

 private:
  void* handle_ = nullptr;  // cudaEvent_t
};

// ------------------------------------- graphs -----------------------------------------------

// Owns one instantiated CUDA graph (cudaGraphExec_t): work captured once by CaptureGraph and
// replayed with the same kernels, arguments and pointers. Move-only; the destructor destroys
// it (the caller must not destroy it while a launch of it is being enqueued elsewhere;
// launches already queued complete).
class ExecutableGraph {
 public:
  ExecutableGraph() = default;  // owns nothing: Launch returns FailedPrecondition

  ExecutableGraph(ExecutableGraph&& other) noexcept;
  ExecutableGraph& operator=(ExecutableGraph&& other) noexcept;
  ExecutableGraph(const ExecutableGraph&) = delete;
  ExecutableGraph& operator=(const ExecutableGraph&) = delete;
  ~ExecutableGraph();

  // Asynchronous: enqueues one replay of the graph on `stream` (cudaGraphLaunch). Every
  // buffer the captured work used must still be alive and hold the replay's inputs.
  [[nodiscard]] absl::Status Launch(Stream stream);

 private:
  friend absl::StatusOr<ExecutableGraph> CaptureGraph(Stream, absl::FunctionRef<absl::Status()>);
  void* exec_ = nullptr;  // cudaGraphExec_t
};

// Captures the work that `enqueue` puts on `stream` into a graph and instantiates it:
// cudaStreamBeginCapture in thread-local mode (other threads may keep using the runtime;
// this thread must not make calls that capture forbids, such as synchronous copies or
// synchronising the stream), then `enqueue()`, then cudaStreamEndCapture (always, even when
// enqueue failed), then cudaGraphInstantiate when both succeeded; the intermediate graph is
// destroyed. Nothing runs on the device during capture: the work runs only when the result is
// launched. `stream` must not be the legacy default stream and must not be capturing already.
// Errors, first one wins: the begin call's, then enqueue's own Status (returned unchanged),
// then the end call's (for example cudaErrorStreamCaptureInvalidated when enqueue made a
// forbidden call), then instantiation's.
[[nodiscard]] absl::StatusOr<ExecutableGraph> CaptureGraph(
    Stream stream, absl::FunctionRef<absl::Status()> enqueue);

// ------------------------------------- copies -----------------------------------------------
// Asynchronous on `stream`: each call enqueues the copy (or fill) and returns. The host
// memory must stay valid and unchanged (for a download: untouched) until the stream has
// reached the copy; it is only truly asynchronous when the host side is pinned (a pageable
// source may be staged by the runtime before the call returns). Device pointers are device
// memory of the current device (or memory it can access). Zero bytes enqueue nothing and
// return OK. Errors: InvalidArgument when the runtime rejects a pointer or size; Internal
// when an earlier kernel fault has broken the context (the runtime reports it on every call).

// `bytes` from host `src` to device `dst`.
[[nodiscard]] absl::Status CopyHostToDeviceAsync(void* dst, const void* src, size_t bytes,
                                                 Stream stream);
// `bytes` from device `src` to host `dst`.
[[nodiscard]] absl::Status CopyDeviceToHostAsync(void* dst, const void* src, size_t bytes,
                                                 Stream stream);
// A 2-D device-to-device copy (cudaMemcpy2DAsync): `height` rows of `width_bytes` each, row r
// read at src + r * src_pitch and written at dst + r * dst_pitch (pitches in bytes, each >=
// width_bytes). A zero width or height enqueues nothing.
[[nodiscard]] absl::Status CopyDeviceToDevice2DAsync(void* dst, size_t dst_pitch,
                                                     const void* src, size_t src_pitch,
                                                     size_t width_bytes, size_t height,
                                                     Stream stream);
// Sets `bytes` of device memory at `dst` to the byte `value` (cudaMemsetAsync).
[[nodiscard]] absl::Status MemsetAsync(void* dst, int value, size_t bytes, Stream stream);

}  // namespace tpserve::kernels::cuda
