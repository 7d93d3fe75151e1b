// SoloCommunicator: the group of one process. Collectives leave data as it is, agreement
// works over it, Split gives another group of one, and every call that needs another rank
// says so instead of waiting for it.
#include "comm/solo_communicator.h"

#include <gtest/gtest.h>

#include <vector>

namespace tpserve {
namespace {

TEST(SoloCommunicator, IsRankZeroOfOne) {
  SoloCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
}

TEST(SoloCommunicator, CollectivesKeepThisRanksData) {
  SoloCommunicator c;
  std::vector<float> f = {1.5f, -2.0f};
  ASSERT_TRUE(c.AllReduceSum(f.data(), f.size()).ok());
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.0f}));
  std::vector<int32_t> i = {3, -7};
  ASSERT_TRUE(c.AllReduceMax(i.data(), i.size()).ok());
  EXPECT_EQ(i, (std::vector<int32_t>{3, -7}));
  const std::vector<uint8_t> send = {1, 2, 3};
  std::vector<uint8_t> recv(3, 0);
  ASSERT_TRUE(c.AllGather(send.data(), send.size(), recv.data()).ok());
  EXPECT_EQ(recv, send);
  std::vector<uint8_t> bytes = {9, 8};
  ASSERT_TRUE(BroadcastBytes(c, bytes, 0).ok());
  EXPECT_EQ(bytes, (std::vector<uint8_t>{9, 8}));
  EXPECT_EQ(c.Broadcast(bytes.data(), bytes.size(), 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.AllReduceSum(nullptr, 2).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SoloCommunicator, AgreementIsThisRanksVerdict) {
  SoloCommunicator c;
  EXPECT_TRUE(AgreeOnStatus(c, absl::OkStatus()).ok());
  const absl::Status agreed = AgreeOnStatus(c, absl::NotFoundError("no weights"));
  EXPECT_EQ(agreed.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(agreed.message().find("no weights"), absl::string_view::npos) << agreed;
}

TEST(SoloCommunicator, SplitGivesAGroupOfOne) {
  SoloCommunicator c;
  absl::StatusOr<std::unique_ptr<Communicator>> sub = c.Split(5, 0);
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ((*sub)->rank(), 0);
  EXPECT_EQ((*sub)->size(), 1);
}

TEST(SoloCommunicator, PointToPointNamesTheMissingPeer) {
  SoloCommunicator c;
  uint8_t b = 0;
  const absl::Status s = c.Send(&b, 1, 1, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("peer 1"), absl::string_view::npos) << s;
  EXPECT_EQ(c.Recv(&b, 1, 1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.SendAsync({1}, 1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.RecvAny(1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Probe(1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<bool> none = c.Probe(0, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(*none);
  EXPECT_TRUE(c.FlushSends().ok());
}

}  // namespace
}  // namespace tpserve
