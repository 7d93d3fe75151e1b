// CreateCudaRankCompute in a build without CUDA (TPSERVE_HAVE_CUDA off): no device is visible
// and creation fails with FailedPrecondition, so --backend=cuda reports why instead of linking
// errors. The real implementation is cuda_rank_compute.cc.
#include "worker/cuda/cuda_rank_compute.h"

namespace tpserve {

int CudaDeviceCount() { return 0; }

absl::Status CudaBackendSupports(const ModelConfig& config, const Layout& layout) {
  return absl::FailedPreconditionError("tpserve was built without CUDA");
}

absl::StatusOr<std::unique_ptr<RankCompute>> CreateCudaRankCompute(
    const ModelConfig& config, const Layout& layout, const ShardWeights& weights,
    DeviceCommunicator* tp_group, const CudaComputeOptions& options) {
  return absl::FailedPreconditionError("tpserve was built without CUDA");
}

}  // namespace tpserve
