// CreateNcclCommunicator in a build without NCCL (no CUDA toolkit or no nccl.h at configure
// time): every call fails the same way on every rank, so no rank waits for another and no
// collective call is made on the group.
#include "comm/nccl/nccl_communicator.h"

namespace tpserve {

bool NcclAvailable() { return false; }

absl::StatusOr<std::unique_ptr<DeviceCommunicator>> CreateNcclCommunicator(
    Communicator& group, int device, absl::Duration init_timeout) {
  return absl::FailedPreconditionError(
      "tpserve was built without NCCL (no CUDA toolkit or nccl.h found at configure time)");
}

}  // namespace tpserve
