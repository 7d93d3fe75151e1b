#include "launcher/replica_command.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpserve {

std::vector<std::string> ReplicaCommand(const ClusterConfig& c, const ReplicaConfig& r,
                                        const std::string& worker) {
  std::vector<std::string> cmd = {"mpirun", "-np",
                                  std::to_string(r.tensor_parallel * r.pipeline_parallel)};
  if (getuid() == 0) cmd.push_back("--allow-run-as-root");
  if (!r.hosts.empty()) {
    cmd.push_back("--host");
    cmd.push_back(absl::StrJoin(r.hosts, ","));
  }
  if (!r.gpus.empty()) {
    cmd.push_back("-x");
    cmd.push_back(absl::StrCat("CUDA_VISIBLE_DEVICES=", absl::StrJoin(r.gpus, ",")));
  }
  cmd.insert(cmd.end(), r.mpirun_args.begin(), r.mpirun_args.end());
  cmd.insert(cmd.end(), {worker, "--model", c.model, "--tp", std::to_string(r.tensor_parallel),
                         "--pp", std::to_string(r.pipeline_parallel), "--coordinator",
                         c.coordinator_worker_listen, "--name", r.name, "--kv_block_size",
                         std::to_string(c.scheduler.kv_block_size), "--kv_blocks",
                         std::to_string(c.scheduler.kv_cache_blocks), "--backend", r.backend,
                         "--gpu_memory_fraction", absl::StrCat(r.gpu_memory_fraction),
                         absl::StrCat("--cuda_graphs=", r.cuda_graphs ? "true" : "false"),
                         "--stage_handoff", r.stage_handoff});
  if (!r.layers_per_stage.empty()) {
    cmd.push_back("--layers_per_stage");
    cmd.push_back(absl::StrJoin(r.layers_per_stage, ","));
  }
  return cmd;
}

}  // namespace tpserve
