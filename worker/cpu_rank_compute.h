// The CPU implementation of RankCompute (layer: worker): kernels/ops.h with fp32 activations,
// weights in their stored dtype (F32/F16/BF16, widened on the fly), the paged KV cache in host
// memory (fp32) and the tensor-parallel all-reduces and vocab gathers over the host
// Communicator. Bit-for-bit the engine's original CPU path.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "model/config.h"
#include "worker/layout.h"
#include "worker/rank_compute.h"
#include "worker/shard_weights.h"

namespace tpserve {

// Takes ownership of `weights`. `tp_group` (this rank's tensor-parallel group, which must
// outlive the result) may be null only when layout.tp == 1 (else InvalidArgument).
absl::StatusOr<std::unique_ptr<RankCompute>> CreateCpuRankCompute(const ModelConfig& config,
                                                                  const Layout& layout,
                                                                  ShardWeights weights,
                                                                  Communicator* tp_group);

}  // namespace tpserve
