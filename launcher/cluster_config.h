// The YAML cluster description that `tpserve launch` reads (layer: launcher; plain data).
// See cluster-configs/ for examples and every key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve {

struct ReplicaConfig {
  std::string name;
  int tensor_parallel = 1;
  int pipeline_parallel = 1;
  std::string backend = "cpu";              // cpu | cuda | auto
  double gpu_memory_fraction = 0.9;         // cuda: share of each GPU for weights + KV cache
  bool cuda_graphs = true;                  // cuda: replay decode steps from CUDA graphs
  std::string stage_handoff = "nccl";       // cuda, pp > 1: nccl | host
  std::vector<std::string> hosts;           // mpirun --host entries, e.g. "node1:4"; empty = local
  // cuda/auto: the GPU indices this replica may use on each of its hosts (CUDA_VISIBLE_DEVICES
  // for its ranks; a rank takes the entry of its node-local rank), e.g. [4, 5, 6, 7] for a
  // second replica on an 8-GPU node; empty = every GPU.
  std::vector<int> gpus;
  std::vector<int> layers_per_stage;        // empty = even split
  std::vector<std::string> mpirun_args;     // extra mpirun arguments
};

struct SchedulerConfig {
  int max_num_seqs = 64;
  int max_batch_tokens = 512;
  int kv_block_size = 16;
  int kv_cache_blocks = 0;  // 0 = sized by the worker
};

struct ClusterConfig {
  std::string model;  // absolute, or relative to the config file's folder
  std::string coordinator_listen = "127.0.0.1:50051";
  std::string coordinator_worker_listen = "127.0.0.1:50052";
  std::vector<std::string> coordinator_args;  // extra tpserve-coordinator flags
  std::vector<ReplicaConfig> replicas;
  SchedulerConfig scheduler;
};

// Parses YAML text. `source` names the file in errors; `base_dir` resolves a relative model
// path. InvalidArgument naming the key for: bad YAML, a missing model or replicas list, an
// unknown key (typos must not pass silently), a wrong type, sizes < 1, duplicate replica
// names, a backend other than cpu/cuda/auto, layers_per_stage whose length is not
// pipeline_parallel, or gpus that are negative, repeated, given to a cpu replica, or fewer
// than the ranks the replica puts on one host (host "name:slots", or all ranks when local).
absl::StatusOr<ClusterConfig> ParseClusterConfig(const std::string& yaml_text,
                                                 const std::string& source,
                                                 const std::string& base_dir);

// Reads and parses a file; NotFound when it is missing.
absl::StatusOr<ClusterConfig> LoadClusterConfig(const std::string& path);

}  // namespace tpserve
