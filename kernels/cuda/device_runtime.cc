// The CUDA runtime wrappers of device_runtime.h. Every runtime error becomes a Status in
// cuda_status.cc (CudaErrorToStatus); this file only names the call.
#include "kernels/cuda/device_runtime.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::kernels::cuda {
namespace {

// The runtime also keeps a failed call's error as the thread's "last error", which every
// launcher of kernels/cuda reads (cudaGetLastError) right after its launch: left there, the
// error of a failed capture, copy or event call would fail the next, unrelated op. It is
// reported here, so clear it (a sticky error, a broken context, stays and is reported again).
absl::Status Cuda(cudaError_t err, absl::string_view what) {
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaErrorToStatus(static_cast<int>(err), what);
}

cudaStream_t ToCuda(Stream stream) { return static_cast<cudaStream_t>(stream.handle); }

}  // namespace

// ------------------------------------- device -----------------------------------------------

absl::Status SetDevice(int device) { return Cuda(cudaSetDevice(device), "cudaSetDevice"); }

absl::StatusOr<DeviceMemoryInfo> DeviceMemory() {
  DeviceMemoryInfo info;
  const cudaError_t err = cudaMemGetInfo(&info.free_bytes, &info.total_bytes);
  if (err != cudaSuccess) return Cuda(err, "cudaMemGetInfo");
  return info;
}

absl::StatusOr<int> MultiprocessorCount(int device) {
  int count = 0;
  const cudaError_t err =
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) {
    return Cuda(err, absl::StrCat("cudaDeviceGetAttribute(multiprocessors, device ", device, ")"));
  }
  return count;
}

// ------------------------------------- streams ----------------------------------------------

absl::StatusOr<OwnedStream> OwnedStream::Create() {
  cudaStream_t stream = nullptr;
  const cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (err != cudaSuccess) return Cuda(err, "cudaStreamCreateWithFlags");
  OwnedStream owned;
  owned.handle_ = stream;
  return owned;
}

OwnedStream::OwnedStream(OwnedStream&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)) {}

OwnedStream& OwnedStream::operator=(OwnedStream&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) (void)cudaStreamDestroy(static_cast<cudaStream_t>(handle_));
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

OwnedStream::~OwnedStream() {
  if (handle_ != nullptr) (void)cudaStreamDestroy(static_cast<cudaStream_t>(handle_));
}

// ------------------------------------- host memory ------------------------------------------

PinnedHostBuffer::PinnedHostBuffer(PinnedHostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) (void)cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

PinnedHostBuffer::~PinnedHostBuffer() {
  if (data_ != nullptr) (void)cudaFreeHost(data_);
}

absl::Status PinnedHostBuffer::Reserve(size_t bytes) {
  if (bytes <= size_) return absl::OkStatus();
  // Free first: the contents are not kept, and the peak stays at the larger size.
  if (data_ != nullptr) (void)cudaFreeHost(data_);
  data_ = nullptr;
  size_ = 0;
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    // An allocation failure is not sticky: clear it so that a later launch's
    // cudaGetLastError does not report it.
    (void)cudaGetLastError();
    return Cuda(err, absl::StrCat("cudaHostAlloc(", bytes, " bytes)"));
  }
  data_ = static_cast<unsigned char*>(p);
  size_ = bytes;
  return absl::OkStatus();
}

// ------------------------------------- events -----------------------------------------------

absl::StatusOr<Event> Event::Create() {
  cudaEvent_t event = nullptr;
  const cudaError_t err = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
  if (err != cudaSuccess) return Cuda(err, "cudaEventCreateWithFlags");
  Event owned;
  owned.handle_ = event;
  return owned;
}

Event::Event(Event&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(handle_));
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (handle_ != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(handle_));
}

absl::Status Event::Record(Stream stream) {
  if (handle_ == nullptr) return absl::FailedPreconditionError("Record on an empty Event");
  return Cuda(cudaEventRecord(static_cast<cudaEvent_t>(handle_), ToCuda(stream)),
              "cudaEventRecord");
}

absl::Status Event::Synchronize() {
  if (handle_ == nullptr) return absl::FailedPreconditionError("Synchronize on an empty Event");
  return Cuda(cudaEventSynchronize(static_cast<cudaEvent_t>(handle_)), "cudaEventSynchronize");
}

absl::Status Event::MakeStreamWait(Stream stream) const {
  if (handle_ == nullptr) return absl::FailedPreconditionError("MakeStreamWait on an empty Event");
  return Cuda(cudaStreamWaitEvent(ToCuda(stream), static_cast<cudaEvent_t>(handle_), 0),
              "cudaStreamWaitEvent");
}

// ------------------------------------- graphs -----------------------------------------------

ExecutableGraph::ExecutableGraph(ExecutableGraph&& other) noexcept
    : exec_(std::exchange(other.exec_, nullptr)) {}

ExecutableGraph& ExecutableGraph::operator=(ExecutableGraph&& other) noexcept {
  if (this != &other) {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
    exec_ = std::exchange(other.exec_, nullptr);
  }
  return *this;
}

ExecutableGraph::~ExecutableGraph() {
  if (exec_ != nullptr) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
}

absl::Status ExecutableGraph::Launch(Stream stream) {
  if (exec_ == nullptr) return absl::FailedPreconditionError("Launch of an empty graph");
  return Cuda(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), ToCuda(stream)),
              "cudaGraphLaunch");
}

absl::StatusOr<ExecutableGraph> CaptureGraph(Stream stream,
                                             absl::FunctionRef<absl::Status()> enqueue) {
  const cudaStream_t s = ToCuda(stream);
  // Thread-local mode: only this thread's unsafe calls invalidate the capture; other threads
  // of the process (another rank's compute, a logger touching the runtime) are unaffected.
  if (absl::Status begun = Cuda(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal),
                                "cudaStreamBeginCapture");
      !begun.ok()) {
    return begun;
  }
  const absl::Status enqueued = enqueue();
  // Always end the capture, so that the stream is usable again whatever enqueue did.
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  const absl::Status end_status = Cuda(ended, "cudaStreamEndCapture");  // clears it either way
  absl::Status status = enqueued.ok() ? end_status : enqueued;
  ExecutableGraph result;
  if (status.ok()) {
    cudaGraphExec_t exec = nullptr;
    status = Cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
    if (status.ok()) result.exec_ = exec;
  }
  if (graph != nullptr) (void)cudaGraphDestroy(graph);
  if (!status.ok()) return status;
  return result;
}

// ------------------------------------- copies -----------------------------------------------

absl::Status CopyHostToDeviceAsync(void* dst, const void* src, size_t bytes, Stream stream) {
  if (bytes == 0) return absl::OkStatus();
  return Cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ToCuda(stream)),
              "cudaMemcpyAsync host to device");
}

absl::Status CopyDeviceToHostAsync(void* dst, const void* src, size_t bytes, Stream stream) {
  if (bytes == 0) return absl::OkStatus();
  return Cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ToCuda(stream)),
              "cudaMemcpyAsync device to host");
}

absl::Status CopyDeviceToDevice2DAsync(void* dst, size_t dst_pitch, const void* src,
                                       size_t src_pitch, size_t width_bytes, size_t height,
                                       Stream stream) {
  if (width_bytes == 0 || height == 0) return absl::OkStatus();
  return Cuda(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width_bytes, height,
                                cudaMemcpyDeviceToDevice, ToCuda(stream)),
              "cudaMemcpy2DAsync device to device");
}

absl::Status MemsetAsync(void* dst, int value, size_t bytes, Stream stream) {
  if (bytes == 0) return absl::OkStatus();
  return Cuda(cudaMemsetAsync(dst, value, bytes, ToCuda(stream)), "cudaMemsetAsync");
}

}  // namespace tpserve::kernels::cuda
