// ReplicaCommand: the mpirun line of a replica carries its placement, its GPUs and every
// worker flag its config sets.
#include "launcher/replica_command.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace tpserve {
namespace {

// The position of `arg` in `cmd` (cmd.size() when absent).
size_t IndexOf(const std::vector<std::string>& cmd, const std::string& arg) {
  return static_cast<size_t>(std::find(cmd.begin(), cmd.end(), arg) - cmd.begin());
}

TEST(ReplicaCommandTest, PlacementGpusAndWorkerFlags) {
  ClusterConfig c;
  c.model = "/models/m";
  c.coordinator_worker_listen = "10.0.0.1:50052";
  c.scheduler.kv_block_size = 16;
  ReplicaConfig r;
  r.name = "node0-b";
  r.tensor_parallel = 4;
  r.pipeline_parallel = 2;
  r.backend = "cuda";
  r.cuda_graphs = false;
  r.hosts = {"node0:4", "node1:4"};
  r.gpus = {4, 5, 6, 7};
  r.layers_per_stage = {30, 18};
  r.mpirun_args = {"--map-by", "slot"};
  const std::vector<std::string> cmd = ReplicaCommand(c, r, "/bin/tpserve-worker");
  ASSERT_GE(cmd.size(), 3u);
  EXPECT_EQ(cmd[0], "mpirun");
  EXPECT_EQ(cmd[IndexOf(cmd, "-np") + 1], "8");
  EXPECT_EQ(cmd[IndexOf(cmd, "--host") + 1], "node0:4,node1:4");
  const size_t x = IndexOf(cmd, "-x");
  ASSERT_LT(x + 1, cmd.size());
  EXPECT_EQ(cmd[x + 1], "CUDA_VISIBLE_DEVICES=4,5,6,7");
  const size_t worker = IndexOf(cmd, "/bin/tpserve-worker");
  ASSERT_LT(worker, cmd.size());
  EXPECT_LT(x, worker) << "mpirun's options come before the program";
  EXPECT_LT(IndexOf(cmd, "--map-by"), worker);
  for (const auto& [flag, value] :
       std::vector<std::pair<std::string, std::string>>{{"--model", "/models/m"},
                                                         {"--tp", "4"},
                                                         {"--pp", "2"},
                                                         {"--coordinator", "10.0.0.1:50052"},
                                                         {"--name", "node0-b"},
                                                         {"--kv_block_size", "16"},
                                                         {"--backend", "cuda"},
                                                         {"--layers_per_stage", "30,18"}}) {
    const size_t at = IndexOf(cmd, flag);
    ASSERT_LT(at + 1, cmd.size()) << flag;
    EXPECT_GT(at, worker) << flag;
    EXPECT_EQ(cmd[at + 1], value) << flag;
  }
  EXPECT_LT(IndexOf(cmd, "--cuda_graphs=false"), cmd.size());
}

TEST(ReplicaCommandTest, NoGpusNoHostsMeansNeither) {
  ClusterConfig c;
  ReplicaConfig r;
  const std::vector<std::string> cmd = ReplicaCommand(c, r, "w");
  EXPECT_EQ(IndexOf(cmd, "-x"), cmd.size());
  EXPECT_EQ(IndexOf(cmd, "--host"), cmd.size());
  EXPECT_EQ(IndexOf(cmd, "--layers_per_stage"), cmd.size());
  EXPECT_EQ(cmd[IndexOf(cmd, "-np") + 1], "1");
}

}  // namespace
}  // namespace tpserve
