// The mpirun command line that starts one replica's worker job (layer: launcher).
#pragma once

#include <string>
#include <vector>

#include "launcher/cluster_config.h"

namespace tpserve {

// mpirun -np TP*PP [--allow-run-as-root when root] [--host HOSTS]
// [-x CUDA_VISIBLE_DEVICES=GPUS] MPIRUN_ARGS... WORKER --model ... (every worker flag the
// config sets). With `gpus`, each rank's node-local rank indexes that list, not all GPUs.
std::vector<std::string> ReplicaCommand(const ClusterConfig& c, const ReplicaConfig& r,
                                        const std::string& worker);

}  // namespace tpserve
