// The host-side checks of CreateCudaRankCompute (layer: worker, internal to worker/cuda; plain
// C++, no CUDA): everything about the model, layout, weights, TP group and options that can be
// refused before any device is touched, so that these errors are the same with or without a
// GPU (and testable without one).
#pragma once

#include "absl/status/status.h"
#include "comm/device_communicator.h"
#include "model/config.h"
#include "worker/cuda/cuda_rank_compute.h"
#include "worker/layout.h"
#include "worker/shard_weights.h"

namespace tpserve::cuda_compute {

// True for the stored dtypes the weight upload converts to bf16 (F32, F16, BF16).
bool ConvertibleDType(DType t);

// InvalidArgument, naming the first problem, for what CreateCudaRankCompute documents as
// InvalidArgument: what CudaBackendSupports refuses (cuda_rank_compute.h), a missing or
// mismatched tp_group, options out of range, or weights whose count, shapes or dtypes do not
// match this rank's slices.
[[nodiscard]] absl::Status CheckCreateArgs(const ModelConfig& c, const Layout& l,
                                           const ShardWeights& w, DeviceCommunicator* tp_group,
                                           const CudaComputeOptions& o);

}  // namespace tpserve::cuda_compute
