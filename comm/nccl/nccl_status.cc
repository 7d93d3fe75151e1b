// NCCL and CUDA runtime codes -> Status for comm/nccl. comm/ depends only on common/, so the
// device selection cannot use kernels/cuda's CudaErrorToStatus: the few CUDA codes it can
// meet are mapped here, in the same words.
#include "comm/nccl/nccl_status.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace tpserve {

absl::Status NcclResultToStatus(int nccl_result, absl::string_view what) {
  const auto result = static_cast<ncclResult_t>(nccl_result);
  if (result == ncclSuccess) return absl::OkStatus();
  std::string message = absl::StrCat(what, ": ", ncclGetErrorString(result));
  // The comm argument is unused by NCCL; the text is the process's last NCCL error.
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&message, " (", last, ")");
  switch (result) {
    case ncclUnhandledCudaError:
    case ncclSystemError:
    case ncclRemoteError:
      return absl::UnavailableError(message);
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    case ncclInProgress:
      return absl::InternalError(
          absl::StrCat(message, " [an operation still in progress was taken for a result]"));
    default:
      return absl::InternalError(message);
  }
}

absl::Status CudaResultToStatus(int cuda_error, absl::string_view what) {
  const auto err = static_cast<cudaError_t>(cuda_error);
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  switch (err) {
    case cudaErrorInvalidDevice:
      return absl::InvalidArgumentError(message);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

}  // namespace tpserve
