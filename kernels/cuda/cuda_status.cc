// CUDA runtime and cuBLAS errors -> absl::Status, the device query, DeviceBuffer. The only file
// of kernels/cuda that turns a cudaError_t or cublasStatus_t into a Status: every other file
// returns the raw code to kernels/cuda/cuda_ops.cc or gemm.cc, which come here.
#include "kernels/cuda/cuda_status.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tpserve::kernels::cuda {

int CudaDeviceCount() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // No driver (cudaErrorInsufficientDriver), no device (cudaErrorNoDevice) or a stub
    // library: clear the error so later calls do not see it, and report "no GPU".
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

absl::StatusOr<std::string> CudaDeviceDescription(int device) {
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    return CudaErrorToStatus(err, absl::StrCat("cudaGetDeviceProperties(", device, ")"));
  }
  char memory[32];
  std::snprintf(memory, sizeof memory, "%.1f GiB",
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return absl::StrCat(prop.name, ", sm_", prop.major, prop.minor, ", ", prop.multiProcessorCount,
                      " SMs, ", memory);
}

absl::Status CudaErrorToStatus(int cuda_error, absl::string_view what) {
  const auto err = static_cast<cudaError_t>(cuda_error);
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  switch (err) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorStubLibrary:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInitializationError:
    case cudaErrorSystemNotReady:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return absl::UnavailableError(message);
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidPtx:
    case cudaErrorUnsupportedPtxVersion:
      return absl::FailedPreconditionError(message);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidDevice:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CublasStatusToStatus(int cublas_status, absl::string_view what) {
  const auto status = static_cast<cublasStatus_t>(cublas_status);
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  // cublasLtGetStatusName/String need no device and return "unknown" for codes they lack.
  const std::string message = absl::StrCat(what, ": ", cublasLtGetStatusName(status), ": ",
                                           cublasLtGetStatusString(status));
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(message);
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return absl::UnavailableError(message);
    case CUBLAS_STATUS_INVALID_VALUE:
      return absl::InvalidArgumentError(message);
    case CUBLAS_STATUS_ARCH_MISMATCH:
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status SynchronizeStream(Stream stream) {
  return CudaErrorToStatus(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.handle)),
                           "cudaStreamSynchronize");
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err != cudaSuccess) {
    // An allocation failure is not sticky: clear it so it does not resurface elsewhere.
    (void)cudaGetLastError();
    return CudaErrorToStatus(err, absl::StrCat("cudaMalloc(", bytes, " bytes)"));
  }
  buffer.data_ = ptr;
  buffer.size_ = bytes;
  return buffer;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) (void)cudaFree(data_);
}

absl::Status DeviceBuffer::CopyFromHost(const void* src, size_t bytes, size_t offset) {
  if (offset > size_ || bytes > size_ - offset) {
    return absl::OutOfRangeError(absl::StrCat("CopyFromHost of ", bytes, " bytes at offset ",
                                              offset, " leaves a buffer of ", size_));
  }
  if (bytes == 0) return absl::OkStatus();
  return CudaErrorToStatus(
      cudaMemcpy(static_cast<char*>(data_) + offset, src, bytes, cudaMemcpyHostToDevice),
      "cudaMemcpy host to device");
}

absl::Status DeviceBuffer::CopyToHost(void* dst, size_t bytes, size_t offset) const {
  if (offset > size_ || bytes > size_ - offset) {
    return absl::OutOfRangeError(absl::StrCat("CopyToHost of ", bytes, " bytes at offset ",
                                              offset, " leaves a buffer of ", size_));
  }
  if (bytes == 0) return absl::OkStatus();
  return CudaErrorToStatus(
      cudaMemcpy(dst, static_cast<const char*>(data_) + offset, bytes, cudaMemcpyDeviceToHost),
      "cudaMemcpy device to host");
}

}  // namespace tpserve::kernels::cuda
