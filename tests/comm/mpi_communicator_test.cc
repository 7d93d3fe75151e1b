// Runs under mpirun with 4 ranks: collectives, splits and status agreement on MPI.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "comm/mpi/mpi_communicator.h"

namespace tpserve {
namespace {

Communicator* g_world = nullptr;

TEST(MpiCommunicatorTest, AllReduceSumsEveryRanksValues) {
  std::vector<float> v(5, static_cast<float>(g_world->rank() + 1));
  ASSERT_TRUE(g_world->AllReduceSum(v.data(), v.size()).ok());
  const int n = g_world->size();
  for (float x : v) EXPECT_EQ(x, n * (n + 1) / 2);
}

TEST(MpiCommunicatorTest, AllGatherOrdersByRank) {
  const int32_t mine = 10 * g_world->rank();
  std::vector<int32_t> all(g_world->size());
  ASSERT_TRUE(g_world->AllGather(&mine, sizeof mine, all.data()).ok());
  for (int r = 0; r < g_world->size(); ++r) EXPECT_EQ(all[r], 10 * r);
}

TEST(MpiCommunicatorTest, SplitFormsGroupsOfEqualColor) {
  auto sub = g_world->Split(g_world->rank() / 2, g_world->rank() % 2);
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ((*sub)->size(), 2);
  EXPECT_EQ((*sub)->rank(), g_world->rank() % 2);
  float v = static_cast<float>(g_world->rank());
  ASSERT_TRUE((*sub)->AllReduceSum(&v, 1).ok());
  const int base = g_world->rank() / 2 * 2;
  EXPECT_EQ(v, base + base + 1);
}

TEST(MpiCommunicatorTest, SendRecvAndRecvAnyMoveBytesBetweenPeers) {
  const int r = g_world->rank(), n = g_world->size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  std::vector<uint8_t> msg(r + 3, static_cast<uint8_t>(r));
  // Even ranks send first so that blocking sends cannot deadlock.
  std::vector<uint8_t> got;
  if (r % 2 == 0) {
    ASSERT_TRUE(g_world->Send(msg.data(), msg.size(), next, 9).ok());
    auto any = g_world->RecvAny(prev, 9);
    ASSERT_TRUE(any.ok());
    got = *any;
  } else {
    auto any = g_world->RecvAny(prev, 9);
    ASSERT_TRUE(any.ok());
    got = *any;
    ASSERT_TRUE(g_world->Send(msg.data(), msg.size(), next, 9).ok());
  }
  EXPECT_EQ(got, std::vector<uint8_t>(prev + 3, static_cast<uint8_t>(prev)));
}

TEST(MpiCommunicatorTest, AgreeOnStatusGivesEveryRankTheLowestFailingRanksError) {
  EXPECT_TRUE(AgreeOnStatus(*g_world, absl::OkStatus()).ok());
  absl::Status local = g_world->rank() >= 2 ? absl::InvalidArgumentError("bad shard " + std::to_string(g_world->rank()))
                                            : absl::OkStatus();
  absl::Status agreed = AgreeOnStatus(*g_world, local);
  EXPECT_EQ(agreed.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agreed.message(), "rank 2: bad shard 2");
}

TEST(MpiCommunicatorTest, BroadcastBytesDeliversTheRootsBuffer) {
  std::vector<uint8_t> b;
  if (g_world->rank() == 1) b = {1, 2, 3, 4, 5};
  ASSERT_TRUE(BroadcastBytes(*g_world, b, 1).ok());
  EXPECT_EQ(b, (std::vector<uint8_t>{1, 2, 3, 4, 5}));
}

// The ctest runs 4 ranks on this one machine: one node, so local ranks are the world ranks.
TEST(MpiCommunicatorTest, NodeLocalPlacementNumbersTheRanksOfOneNodeInWorldOrder) {
  absl::StatusOr<NodePlacement> placement = NodeLocalPlacement();
  ASSERT_TRUE(placement.ok()) << placement.status();
  EXPECT_EQ(placement->local_size, 4);
  EXPECT_EQ(placement->local_rank, g_world->rank());
  absl::StatusOr<int> local_rank = NodeLocalRank();
  ASSERT_TRUE(local_rank.ok()) << local_rank.status();
  EXPECT_EQ(*local_rank, g_world->rank());
  // Every local rank appears once.
  std::vector<int32_t> all(g_world->size());
  const int32_t mine = placement->local_rank;
  ASSERT_TRUE(g_world->AllGather(&mine, sizeof mine, all.data()).ok());
  std::sort(all.begin(), all.end());
  for (int r = 0; r < g_world->size(); ++r) EXPECT_EQ(all[r], r);
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto mpi = tpserve::MpiRuntime::Create(&argc, &argv);
  if (!mpi.ok()) return 2;
  auto world = (*mpi)->World();
  tpserve::g_world = world.get();
  // Only rank 0 prints; every rank runs every test (they are collective).
  if (world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  int32_t any = rc;
  if (!world->AllReduceMax(&any, 1).ok()) return 1;
  return any;
}
