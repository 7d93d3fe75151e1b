#include "worker/layout.h"

#include <gtest/gtest.h>

namespace tpserve {
namespace {

ModelConfig Config(int layers, int heads, int kv_heads, int inter = 128, int vocab = 301) {
  ModelConfig c;
  c.hidden_size = 64;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = 16;
  c.intermediate_size = inter;
  c.vocab_size = vocab;
  return c;
}

TEST(LayoutTest, EvenSplitGivesRemainderToFirstStages) {
  const ModelConfig c = Config(10, 4, 2);
  std::vector<int> begins;
  for (int r = 0; r < 3; ++r) {
    absl::StatusOr<Layout> l = MakeLayout(c, 1, 3, 3, r, {});
    ASSERT_TRUE(l.ok()) << l.status();
    begins.push_back(l->layer_begin);
    EXPECT_EQ(l->stage, r);
  }
  EXPECT_EQ(begins, (std::vector<int>{0, 4, 7}));
}

TEST(LayoutTest, RankMapsToStageAndTensorRank) {
  absl::StatusOr<Layout> l = MakeLayout(Config(4, 4, 2), 2, 2, 4, 3, {});
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->stage, 1);
  EXPECT_EQ(l->tp_rank, 1);
  EXPECT_EQ(l->layer_begin, 2);
  EXPECT_EQ(l->layer_end, 4);
  EXPECT_EQ(l->q_head_begin, 2);
  EXPECT_EQ(l->kv_head_begin, 1);
  EXPECT_EQ(l->kv_head_end, 2);
  EXPECT_EQ(l->mlp_begin, 64);
  EXPECT_EQ(l->RankOf(0, 1), 1);
}

TEST(LayoutTest, ExplicitLayersPerStageAreUsed) {
  absl::StatusOr<Layout> l = MakeLayout(Config(4, 4, 2), 1, 3, 3, 1, {2, 1, 1});
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->layer_begin, 2);
  EXPECT_EQ(l->layer_end, 3);
}

TEST(LayoutTest, KvHeadsReplicateWhenTpExceedsKvHeads) {
  // 4 query heads, 2 KV heads, TP 4: ranks 0,1 read KV head 0; ranks 2,3 read KV head 1.
  for (int r = 0; r < 4; ++r) {
    absl::StatusOr<Layout> l = MakeLayout(Config(4, 4, 2), 4, 1, 4, r, {});
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->kv_heads(), 1);
    EXPECT_EQ(l->kv_head_begin, r / 2);
  }
}

TEST(LayoutTest, UnevenVocabShardsCoverTheVocabulary) {
  int covered = 0;
  for (int r = 0; r < 2; ++r) {
    absl::StatusOr<Layout> l = MakeLayout(Config(4, 4, 2), 2, 1, 2, r, {});
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->vocab_shard, 151);
    EXPECT_EQ(l->vocab_begin, covered);
    covered = l->vocab_end;
  }
  EXPECT_EQ(covered, 301);
}

TEST(LayoutTest, ImpossibleLayoutsAreRefusedWithTheReason) {
  const ModelConfig c = Config(4, 4, 2);
  auto message = [&](int tp, int pp, int world, std::vector<int> lps) {
    absl::StatusOr<Layout> l = MakeLayout(c, tp, pp, world, 0, lps);
    EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(l.status().message());
  };
  EXPECT_NE(message(2, 2, 3, {}).find("3 ranks"), std::string::npos);
  EXPECT_NE(message(3, 1, 3, {}).find("query heads"), std::string::npos);
  EXPECT_NE(message(1, 5, 5, {}).find("exceeds"), std::string::npos);
  EXPECT_NE(message(1, 2, 2, {3, 2}).find("sums to 5"), std::string::npos);
  EXPECT_NE(message(1, 2, 2, {4}).find("entries"), std::string::npos);
  EXPECT_NE(message(1, 2, 2, {4, 0}).find("< 1"), std::string::npos);
  EXPECT_NE(message(0, 1, 1, {}).find(">= 1"), std::string::npos);
  absl::StatusOr<Layout> mlp = MakeLayout(Config(4, 4, 2, 130), 4, 1, 4, 0, {});
  EXPECT_NE(mlp.status().message().find("MLP"), std::string::npos);
}

}  // namespace
}  // namespace tpserve
