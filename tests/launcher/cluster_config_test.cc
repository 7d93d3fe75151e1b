#include "launcher/cluster_config.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace tpserve {
namespace {

constexpr char kGood[] = R"(
model: models/tiny
coordinator: {listen: "0.0.0.0:1", worker_listen: "0.0.0.0:2"}
replicas:
  - {name: a, tensor_parallel: 2, pipeline_parallel: 3, layers_per_stage: [2, 1, 1], hosts: [n0:6]}
  - {name: b}
scheduler: {max_num_seqs: 8, max_batch_tokens: 64, kv_block_size: 4, kv_cache_blocks: 0}
)";

TEST(ClusterConfigTest, ParsesEveryKeyAndResolvesTheModelAgainstTheFile) {
  absl::StatusOr<ClusterConfig> c = ParseClusterConfig(kGood, "c.yaml", "/etc/cfg");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model, "/etc/cfg/models/tiny");
  EXPECT_EQ(c->coordinator_worker_listen, "0.0.0.0:2");
  ASSERT_EQ(c->replicas.size(), 2u);
  EXPECT_EQ(c->replicas[0].pipeline_parallel, 3);
  EXPECT_EQ(c->replicas[0].layers_per_stage, (std::vector<int>{2, 1, 1}));
  EXPECT_EQ(c->replicas[0].hosts, (std::vector<std::string>{"n0:6"}));
  EXPECT_EQ(c->replicas[1].tensor_parallel, 1);
  EXPECT_EQ(c->scheduler.kv_block_size, 4);
}

std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<ClusterConfig> c = ParseClusterConfig(yaml, "c.yaml", "/");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << yaml;
  return std::string(c.status().message());
}

TEST(ClusterConfigTest, BadConfigsNameTheKeyAtFault) {
  EXPECT_NE(ErrorOf("replicas: [{name: a}]").find("model: missing"), std::string::npos);
  EXPECT_NE(ErrorOf("model: m").find("replicas: missing"), std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{name: a, tensor_paralel: 2}]").find("replicas[0].tensor_paralel: unknown key"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{tensor_parallel: two}]").find("replicas[0].tensor_parallel: has the wrong type"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{pipeline_parallel: 0}]").find("must be >= 1"), std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{backend: tpu}]").find("not cpu, cuda or auto"), std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{gpu_memory_fraction: 1.5}]")
                .find("replicas[0].gpu_memory_fraction: 1.5 is outside (0, 1]"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{stage_handoff: mpi}]").find("replicas[0].stage_handoff: \"mpi\" is not nccl or host"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{cuda_graphs: sometimes}]").find("replicas[0].cuda_graphs: has the wrong type"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{name: a}, {name: a}]").find("used twice"), std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{pipeline_parallel: 2, layers_per_stage: [4]}]").find("1 entries"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{}]\nscheduler: {kv_block_size: -1}").find("scheduler.kv_block_size"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: [unclosed").find("not valid YAML"), std::string::npos);
}

TEST(ClusterConfigTest, GpusAreCheckedAgainstTheRanksEachHostGets) {
  absl::StatusOr<ClusterConfig> c = ParseClusterConfig(
      "model: m\nreplicas:\n"
      "  - {name: a, tensor_parallel: 4, backend: cuda, hosts: [n0:8], gpus: [4, 5, 6, 7]}\n"
      "  - {name: b, tensor_parallel: 2, backend: auto, gpus: [1, 0]}\n"
      "  - {name: c, tensor_parallel: 4, pipeline_parallel: 2, backend: cuda,\n"
      "     hosts: [n0:4, n1:4], gpus: [0, 1, 2, 3]}\n",
      "c.yaml", "/");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->replicas[0].gpus, (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(c->replicas[1].gpus, (std::vector<int>{1, 0}));
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{backend: cpu, gpus: [0]}]")
                .find("replicas[0].gpus: given for a cpu replica"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{backend: cuda, gpus: [0, -1]}]").find("-1 is negative"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{backend: cuda, gpus: [2, 2]}]").find("GPU 2 is listed twice"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{tensor_parallel: 2, backend: cuda, gpus: [3]}]")
                .find("replicas[0].gpus: 1 GPUs for the 2 ranks of a local replica"),
            std::string::npos);
  // Eight ranks over n0:4 and n1:4: four on each host, three GPUs listed.
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{tensor_parallel: 8, backend: cuda, hosts: [n0:4, n1:4], "
                    "gpus: [0, 1, 2]}]")
                .find("3 GPUs for the 4 ranks on n0:4"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model: m\nreplicas: [{backend: cuda, gpus: one}]").find("gpus: has the wrong type"),
            std::string::npos);
}

TEST(ClusterConfigTest, ShippedClusterConfigsAreValid) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(TPSERVE_CLUSTER_CONFIGS)) {
    if (entry.path().extension() != ".yaml") continue;
    absl::StatusOr<ClusterConfig> c = LoadClusterConfig(entry.path().string());
    EXPECT_TRUE(c.ok()) << entry.path() << ": " << c.status();
    ++count;
  }
  EXPECT_GE(count, 5);
}

}  // namespace
}  // namespace tpserve
