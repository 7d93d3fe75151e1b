// `tpserve bench`'s load generator against a fake stream function (no server).
#include "clients/cli/load_bench.h"

#include <atomic>
#include <mutex>
#include <set>

#include "gtest/gtest.h"

namespace tpserve::cli {
namespace {

TEST(LoadBenchTest, PromptsAreDeterministicInsideTheVocabularyAndDifferPerRequest) {
  EXPECT_EQ(BenchPrompt(3, 10, 50), BenchPrompt(3, 10, 50));
  EXPECT_NE(BenchPrompt(3, 10, 50), BenchPrompt(4, 10, 50));
  for (uint32_t id : BenchPrompt(7, 200, 50)) EXPECT_TRUE(id >= 3 && id < 50) << id;
}

TEST(LoadBenchTest, EveryRequestRunsOnceAndEveryTokenIsCounted) {
  std::atomic<int> calls{0}, in_flight{0}, most{0};
  std::set<std::vector<uint32_t>> prompts;
  std::mutex mu;
  const StreamFn stream = [&](const client::GenerateOptions& o,
                              const std::function<bool(const client::StreamChunk&)>& on_chunk) {
    ++calls;
    const int now = ++in_flight;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {}
    {
      std::lock_guard<std::mutex> lock(mu);
      prompts.insert(o.prompt_token_ids);
    }
    EXPECT_EQ(o.temperature, 0.0f);
    EXPECT_TRUE(o.ignore_eos);
    client::StreamChunk first;  // a chunk without tokens (e.g. prompt logprobs) is not a token
    on_chunk(first);
    for (uint32_t t = 0; t < o.max_new_tokens; ++t) {
      client::StreamChunk c;
      c.token_ids = {t};
      on_chunk(c);
    }
    --in_flight;
    return absl::OkStatus();
  };
  LoadLevel level;
  level.concurrency = 4;
  level.requests = 10;
  level.new_tokens = 5;
  level.vocab_size = 1000;
  absl::StatusOr<LoadResult> r = RunLoadLevel(level, stream);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(calls.load(), 10);
  EXPECT_EQ(prompts.size(), 10u);
  EXPECT_LE(most.load(), 4);
  EXPECT_GT(r->output_tokens_per_s, 0);
  EXPECT_GT(r->requests_per_s, 0);
}

TEST(LoadBenchTest, AFailedRequestFailsTheLevelAndBadLevelsAreRefused) {
  const StreamFn failing = [](const client::GenerateOptions&,
                              const std::function<bool(const client::StreamChunk&)>&) {
    return absl::UnavailableError("no replica");
  };
  LoadLevel level;
  level.vocab_size = 100;
  EXPECT_EQ(RunLoadLevel(level, failing).status().code(), absl::StatusCode::kUnavailable);
  level.requests = 0;
  EXPECT_EQ(RunLoadLevel(level, failing).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tpserve::cli
