// Collectives and point-to-point transfers on DEVICE memory between the ranks of one worker
// job (layer: comm; a plain C++ header: no CUDA or NCCL types). The GPU twin of
// comm/communicator.h: every call is enqueued on a CUDA stream (a cudaStream_t passed as
// void*) and returns at once; the result is ready when the stream reaches it, so the calls can
// sit between kernels and inside a captured CUDA graph. Collective calls must be made by every
// rank of the group in the same order. One thread at a time per communicator.
// Errors: InvalidArgument for bad arguments (nothing enqueued); Unavailable when the transport
// or a peer failed (the communicator is unusable afterwards); Internal for a library bug.
#pragma once

#include <cstddef>

#include "absl/status/status.h"

namespace tpserve {

enum class DeviceDType { kBf16, kF32 };

class DeviceCommunicator {
 public:
  virtual ~DeviceCommunicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In-place elementwise sum of `count` elements of `dtype` at `data` across the group.
  [[nodiscard]] virtual absl::Status AllReduceSum(void* data, size_t count, DeviceDType dtype,
                                                  void* stream) = 0;
  // Gathers `bytes` at `send` from every rank into `recv` ([size() * bytes], rank-major).
  [[nodiscard]] virtual absl::Status AllGather(const void* send, size_t bytes, void* recv,
                                               void* stream) = 0;
  // Point-to-point: exactly `bytes` to / from rank `peer` of this group.
  [[nodiscard]] virtual absl::Status Send(const void* data, size_t bytes, int peer,
                                          void* stream) = 0;
  [[nodiscard]] virtual absl::Status Recv(void* data, size_t bytes, int peer, void* stream) = 0;
};

}  // namespace tpserve
