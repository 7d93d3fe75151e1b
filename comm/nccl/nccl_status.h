// NCCL (and the few CUDA runtime) error codes of comm/nccl -> absl::Status (layer: comm; a
// plain C++ header: codes travel as int). nccl_status.cc is the one file of comm/nccl where a
// ncclResult_t or cudaError_t becomes a Status. Defined only in a build with NCCL
// (TPSERVE_HAVE_NCCL). Callable from any thread, with or without a GPU.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tpserve {

// Maps an NCCL result code (a ncclResult_t value) to a Status whose message is
// "<what>: <ncclGetErrorString>" followed by " (<ncclGetLastError text>)" when NCCL has one
// (that text may come from an earlier asynchronous failure). ncclSuccess (0) maps to OK.
//   Unavailable      ncclUnhandledCudaError (1), ncclSystemError (2), ncclRemoteError (6): a
//                    CUDA call, the system or network, or a peer failed (the communicator
//                    is unusable; another one may work);
//   Internal         ncclInternalError (3), ncclInProgress (7: not an outcome; a caller
//                    must wait until the operation has finished) and unknown codes;
//   InvalidArgument  ncclInvalidArgument (4), ncclInvalidUsage (5): the call was rejected
//                    and had no effect.
[[nodiscard]] absl::Status NcclResultToStatus(int nccl_result, absl::string_view what);

// Maps a CUDA runtime error code (a cudaError_t value) from the device selection of comm/nccl
// to a Status "<what>: <cudaErrorName>: <description>". cudaSuccess maps to OK;
// cudaErrorInvalidDevice to InvalidArgument; cudaErrorMemoryAllocation to ResourceExhausted;
// every other code (no driver, no device, a broken context) to Unavailable.
[[nodiscard]] absl::Status CudaResultToStatus(int cuda_error, absl::string_view what);

}  // namespace tpserve
