// Runs under mpirun: each rank measures how much its resident memory grew while its Engine
// loaded, and rank 0 checks that this is its own shard (weights + KV cache), about
// 1/(TP*PP) of the model, not the whole memory-mapped file.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "comm/mpi/mpi_communicator.h"
#include "worker/engine.h"

namespace tpserve {
namespace {

struct RankMemory {
  int64_t rss_growth = 0;
  int64_t weight_bytes = 0;
  int64_t kv_bytes = 0;
};
std::vector<RankMemory> g_ranks;
int64_t g_model_bytes = 0;

// Resident set size of this process in bytes (anonymous and file-backed pages).
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    in.ignore(1 << 20, '\n');
  }
  return -1;
}

TEST(MemoryShareTest, EachRankHoldsOnlyItsShardResident) {
  const int64_t share = g_model_bytes / static_cast<int64_t>(g_ranks.size());
  for (size_t r = 0; r < g_ranks.size(); ++r) {
    const RankMemory& m = g_ranks[r];
    // The shard is a quarter of the model, give or take the embedding / lm_head placement.
    EXPECT_GT(m.weight_bytes, share / 2) << "rank " << r;
    EXPECT_LT(m.weight_bytes, share * 3 / 2) << "rank " << r;
    // Resident growth is the owned copies plus the KV cache, not the mapped file's pages.
    const int64_t owned = m.weight_bytes + m.kv_bytes;
    EXPECT_LT(m.rss_growth, owned + owned / 5 + (8 << 20)) << "rank " << r;
    EXPECT_GT(m.rss_growth, owned / 2) << "rank " << r;
  }
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc != 4) {
    std::fprintf(stderr, "usage: memory_share_test MODEL_DIR TP PP\n");
    return 2;
  }
  auto mpi = tpserve::MpiRuntime::Create(&argc, &argv);
  if (!mpi.ok()) return 2;
  std::unique_ptr<tpserve::Communicator> world = (*mpi)->World();
  tpserve::EngineOptions o;
  o.tp = std::stoi(argv[2]);
  o.pp = std::stoi(argv[3]);
  o.kv_num_blocks = 64;
  const int64_t before = tpserve::ResidentBytes();
  auto engine = tpserve::Engine::Create(argv[1], o, *world);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  tpserve::RankMemory mine{tpserve::ResidentBytes() - before,
                           static_cast<int64_t>((*engine)->weight_bytes()),
                           static_cast<int64_t>((*engine)->kv_bytes())};
  tpserve::g_ranks.resize(world->size());
  if (!world->AllGather(&mine, sizeof mine, tpserve::g_ranks.data()).ok()) return 1;
  if (!(*engine)->is_leader()) return (*engine)->Serve().ok() ? 0 : 1;
  std::ifstream f(std::string(argv[1]) + "/model.safetensors", std::ios::ate | std::ios::binary);
  tpserve::g_model_bytes = static_cast<int64_t>(f.tellg());
  const int rc = RUN_ALL_TESTS();
  return (*engine)->Shutdown().ok() ? rc : 1;
}
