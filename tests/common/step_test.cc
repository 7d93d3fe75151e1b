#include "common/step.h"

#include <gtest/gtest.h>

namespace tpserve {
namespace {

TEST(StepTest, PlanSurvivesSerialization) {
  StepPlan plan;
  plan.step_id = 7;
  SeqWork s;
  s.seq_id = 42;
  s.start_pos = 3;
  s.tokens = {5, 6};
  s.block_table = {9, 1};
  s.sample = true;
  s.sampling.temperature = 0.7f;
  s.sampling.seed = 99;
  s.logprobs = 2;
  s.history = {1, 2, 3};
  plan.seqs.push_back(s);
  absl::StatusOr<StepPlan> back = ParsePlan(SerializePlan(plan));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->seqs.size(), 1u);
  EXPECT_EQ(back->step_id, 7u);
  EXPECT_EQ(back->seqs[0].tokens, s.tokens);
  EXPECT_EQ(back->seqs[0].block_table, s.block_table);
  EXPECT_EQ(back->seqs[0].history, s.history);
  EXPECT_TRUE(back->seqs[0].sample);
  EXPECT_FLOAT_EQ(back->seqs[0].sampling.temperature, 0.7f);
  EXPECT_EQ(back->seqs[0].sampling.seed, 99u);
}

TEST(StepTest, TruncatedPlanIsAnErrorNotACrash) {
  StepPlan plan;
  plan.seqs.resize(2);
  plan.seqs[1].tokens = {1, 2, 3};
  std::vector<uint8_t> bytes = SerializePlan(plan);
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    EXPECT_FALSE(ParsePlan(cut).ok()) << n;
  }
}

TEST(StepTest, ResultSurvivesSerialization) {
  StepResult r;
  r.step_id = 3;
  SeqResult s;
  s.seq_id = 1;
  s.token = 17;
  s.sampled = {17, -0.5f, {{17, -0.5f}, {4, -1.5f}}};
  s.prompt_logprobs = {{3, -2.0f, {}}};
  s.logits = {1.0f, 2.0f};
  r.seqs.push_back(s);
  absl::StatusOr<StepResult> back = ParseResult(SerializeResult(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->seqs[0].token, 17);
  ASSERT_EQ(back->seqs[0].sampled.top.size(), 2u);
  EXPECT_EQ(back->seqs[0].sampled.top[1].token, 4);
  EXPECT_EQ(back->seqs[0].prompt_logprobs[0].token, 3);
  EXPECT_EQ(back->seqs[0].logits, s.logits);
}

}  // namespace
}  // namespace tpserve
