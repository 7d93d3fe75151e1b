#include "worker/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

namespace tpserve {
namespace {

int32_t Sample(std::vector<float> logits, SamplingParams p, int64_t pos = 0,
               std::vector<int32_t> seen = {}) {
  return SampleToken(logits.data(), static_cast<int64_t>(logits.size()), p, seen, pos);
}

TEST(SamplerTest, GreedyPicksTheLargestLogitAndLowestIdOnTies) {
  SamplingParams p;
  EXPECT_EQ(Sample({0.1f, 3.0f, -1.0f, 2.9f}, p), 1);
  EXPECT_EQ(Sample({2.0f, 1.0f, 2.0f}, p), 0);
}

TEST(SamplerTest, PhiloxIsDeterministicAndSpreadsOverTheUnitInterval) {
  EXPECT_EQ(PhiloxUniform(5, 9), PhiloxUniform(5, 9));
  EXPECT_NE(PhiloxUniform(5, 9), PhiloxUniform(5, 10));
  EXPECT_NE(PhiloxUniform(5, 9), PhiloxUniform(6, 9));
  double sum = 0;
  int buckets[10] = {};
  for (int i = 0; i < 10000; ++i) {
    const float u = PhiloxUniform(1, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    ++buckets[static_cast<int>(u * 10)];
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
  for (int b : buckets) EXPECT_NEAR(b, 1000, 150);
}

TEST(SamplerTest, TemperatureSamplingFollowsTheSoftmax) {
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 77;
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[Sample(logits, p, i)];
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(counts[t] / double(n), (t + 1) / 10.0, 0.015) << t;
}

TEST(SamplerTest, SameSeedAndPositionGiveTheSameToken) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f);
  SamplingParams p;
  p.temperature = 1.5f;
  p.seed = 1234;
  for (int pos = 0; pos < 20; ++pos) EXPECT_EQ(Sample(logits, p, pos), Sample(logits, p, pos));
  int differ = 0;
  SamplingParams q = p;
  q.seed = 4321;
  for (int pos = 0; pos < 50; ++pos) differ += Sample(logits, p, pos) != Sample(logits, q, pos);
  EXPECT_GT(differ, 10);
}

TEST(SamplerTest, TopKAndTopPAndMinPKeepOnlyTheHead) {
  const std::vector<float> logits = {5.0f, 4.9f, 0.0f, -1.0f, 4.8f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  for (int pos = 0; pos < 200; ++pos) {
    const int32_t t = Sample(logits, p, pos);
    EXPECT_TRUE(t == 0 || t == 1) << t;
  }
  p.top_k = 0;
  p.top_p = 0.01f;  // only the most probable token reaches the mass
  for (int pos = 0; pos < 50; ++pos) EXPECT_EQ(Sample(logits, p, pos), 0);
  p.top_p = 1.0f;
  p.min_p = 0.5f;  // tokens 2 and 3 are far below half of the max probability
  for (int pos = 0; pos < 200; ++pos) {
    const int32_t t = Sample(logits, p, pos);
    EXPECT_TRUE(t == 0 || t == 1 || t == 4) << t;
  }
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  // Token 0 (3.0 -> 1.5) loses to token 1 (2.0) once seen.
  EXPECT_EQ(Sample({3.0f, 2.0f, -1.0f}, p, 0, {0}), 1);
  // A negative logit is pushed further down: -0.5 -> -1.0 < -0.8.
  EXPECT_EQ(Sample({-0.5f, -0.8f}, p, 0, {0, 0}), 1);
}

TEST(SamplerTest, LogprobsAreALogSoftmaxWithTheTopBestFirst) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f};
  TokenLogprob lp = ComputeLogprobs(logits.data(), 3, 2, 2);
  const double z = std::log(std::exp(1.0) + std::exp(3.0) + std::exp(2.0));
  EXPECT_NEAR(lp.logprob, 2.0 - z, 1e-6);
  ASSERT_EQ(lp.top.size(), 2u);
  EXPECT_EQ(lp.top[0].token, 1);
  EXPECT_EQ(lp.top[1].token, 2);
  EXPECT_NEAR(lp.top[0].logprob, 3.0 - z, 1e-6);
}

}  // namespace
}  // namespace tpserve
