// The CUDA foundation of kernels/cuda (layer: kernels/cuda; plain C++, no CUDA types):
// the one place where CUDA runtime and cuBLAS errors become absl::Status, the device query, a device
// memory owner (DeviceBuffer) and stream synchronisation. Everything here is callable from any
// thread; a DeviceBuffer is used by one thread at a time. Nothing here aborts: without a GPU
// or a driver, CudaDeviceCount() is 0 and every call that reaches the CUDA runtime returns an
// error Status.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/cuda_types.h"

namespace tpserve::kernels::cuda {

// Number of CUDA devices this process can use: 0 when there is no device, no driver, a driver
// too old for this runtime, or CUDA_VISIBLE_DEVICES hides them all. Never fails, never aborts.
int CudaDeviceCount();

// One line describing device `device` ("NVIDIA H200, sm_90, 132 SMs, 139.8 GiB");
// an error Status when it does not exist.
[[nodiscard]] absl::StatusOr<std::string> CudaDeviceDescription(int device);

// Maps a CUDA runtime error code (a cudaError_t value) to a Status whose message is
// "<what>: <cudaErrorName>: <description>". cudaSuccess maps to OK. Codes:
//   ResourceExhausted   out of device memory;
//   Unavailable         no device, no or too old a driver, device busy or lost (retryable
//                       elsewhere);
//   FailedPrecondition  this build holds no code the device can run (an older GPU than sm_80,
//                       or PTX newer than the driver);
//   InvalidArgument     an invalid value, pointer or launch configuration reached the runtime;
//   Internal            everything else, notably faults inside a kernel (illegal address,
//                       misaligned access, launch failure): the CUDA context is unusable and
//                       every later call fails too.
[[nodiscard]] absl::Status CudaErrorToStatus(int cuda_error, absl::string_view what);

// Maps a cuBLAS / cuBLASLt status code (a cublasStatus_t value) to a Status whose message is
// "<what>: <status name>: <description>". CUBLAS_STATUS_SUCCESS maps to OK. Codes:
//   ResourceExhausted   CUBLAS_STATUS_ALLOC_FAILED (host or device memory);
//   Unavailable         CUBLAS_STATUS_NOT_INITIALIZED (no driver or device);
//   InvalidArgument     CUBLAS_STATUS_INVALID_VALUE (a descriptor or pointer it rejects);
//   FailedPrecondition  CUBLAS_STATUS_ARCH_MISMATCH, CUBLAS_STATUS_NOT_SUPPORTED (no algorithm
//                       for this shape, layout or device);
//   Internal            everything else (execution failed, internal error, ...).
[[nodiscard]] absl::Status CublasStatusToStatus(int cublas_status, absl::string_view what);

// Waits until all work queued on `stream` has finished; reports the first error of that work
// (a fault in an earlier asynchronous kernel surfaces here).
[[nodiscard]] absl::Status SynchronizeStream(Stream stream);

// Owns one device allocation (cudaMalloc). Move-only. The destructor frees it; a failure to
// free is ignored (it means the context is already broken, and the next call reports that).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Allocates `bytes` of device memory, uninitialised. 0 bytes allocates nothing (data() is
  // nullptr). ResourceExhausted when the device is out of memory.
  [[nodiscard]] static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);

  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t size() const { return size_; }

  // Synchronous copies between host memory and bytes [offset, offset + bytes) of this buffer.
  // They wait for all earlier work on the legacy default stream (and so on every blocking
  // stream) before copying. OutOfRange when the range leaves the buffer.
  [[nodiscard]] absl::Status CopyFromHost(const void* src, size_t bytes, size_t offset = 0);
  [[nodiscard]] absl::Status CopyToHost(void* dst, size_t bytes, size_t offset = 0) const;

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tpserve::kernels::cuda
