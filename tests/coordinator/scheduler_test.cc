#include "coordinator/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>

namespace tpserve {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  Sequence* Add(int32_t prompt_len, int32_t max_new = 4) {
    auto s = std::make_unique<Sequence>();
    s->id = s->arrival = seqs_.size();
    s->prompt.assign(prompt_len, 7);
    s->stop.max_new_tokens = max_new;
    waiting_.push_back(s.get());
    seqs_.push_back(std::move(s));
    return seqs_.back().get();
  }
  // Applies a step's outcome as the replica does: KV computed, one token per sampled chunk.
  void Complete(const Schedule& sched) {
    for (const ScheduledChunk& c : sched.chunks) {
      c.seq->in_flight = false;
      c.seq->computed = c.start + c.count;
      if (c.sample) c.seq->generated.push_back(1);
      if (static_cast<int32_t>(c.seq->generated.size()) >= c.seq->stop.max_new_tokens) {
        Evict(c.seq, running_, *kv_);
        ++finished_;
      }
    }
  }
  std::vector<std::unique_ptr<Sequence>> seqs_;
  std::vector<Sequence*> running_;
  std::deque<Sequence*> waiting_;
  std::unique_ptr<KvBlockManager> kv_ = std::make_unique<KvBlockManager>(64, 4);
  int finished_ = 0;
};

TEST_F(SchedulerTest, LongPromptIsPrefilledInChunksUnderTheTokenBudget) {
  Sequence* s = Add(100);
  SchedulerLimits limits{8, 32};
  std::vector<int32_t> chunks;
  for (int step = 0; step < 4; ++step) {
    Schedule sched = ScheduleStep(limits, running_, waiting_, *kv_);
    ASSERT_EQ(sched.chunks.size(), 1u);
    chunks.push_back(sched.chunks[0].count);
    EXPECT_EQ(sched.chunks[0].sample, step == 3);
    Complete(sched);
  }
  EXPECT_EQ(chunks, (std::vector<int32_t>{32, 32, 32, 4}));
  EXPECT_EQ(s->generated.size(), 1u);
  EXPECT_EQ(static_cast<int32_t>(s->blocks.size()), kv_->BlocksFor(100));
}

TEST_F(SchedulerTest, DecodesGoFirstAndPrefillTakesTheRestOfTheBudget) {
  Add(3);
  Add(3);
  Complete(ScheduleStep({8, 64}, running_, waiting_, *kv_));  // both prefilled, 1 token each
  Add(50);
  Schedule sched = ScheduleStep({8, 20}, running_, waiting_, *kv_);
  ASSERT_EQ(sched.chunks.size(), 3u);
  EXPECT_EQ(sched.chunks[0].count, 1);
  EXPECT_EQ(sched.chunks[1].count, 1);
  EXPECT_EQ(sched.chunks[2].count, 18);
  EXPECT_FALSE(sched.chunks[2].sample);
}

TEST_F(SchedulerTest, AdmissionStopsAtMaxNumSeqs) {
  for (int i = 0; i < 5; ++i) Add(2);
  Schedule sched = ScheduleStep({3, 100}, running_, waiting_, *kv_);
  EXPECT_EQ(sched.chunks.size(), 3u);
  EXPECT_EQ(waiting_.size(), 2u);
}

TEST_F(SchedulerTest, AdmissionIsFirstComeFirstServedEvenWhenALaterRequestWouldFit) {
  kv_ = std::make_unique<KvBlockManager>(4, 4);  // 16 tokens of KV
  Add(12);
  Add(12);  // does not fit beside the first
  Add(1);   // would fit, but must not overtake
  Schedule sched = ScheduleStep({8, 100}, running_, waiting_, *kv_);
  ASSERT_EQ(sched.chunks.size(), 1u);
  EXPECT_EQ(sched.chunks[0].seq->id, 0u);
  EXPECT_EQ(waiting_.front()->id, 1u);
}

TEST_F(SchedulerTest, SequencesInFlightAreNotScheduledAgain) {
  Add(4);
  Schedule first = ScheduleStep({8, 100}, running_, waiting_, *kv_);
  ASSERT_EQ(first.chunks.size(), 1u);
  EXPECT_TRUE(ScheduleStep({8, 100}, running_, waiting_, *kv_).empty());
  Complete(first);
  EXPECT_EQ(ScheduleStep({8, 100}, running_, waiting_, *kv_).chunks.size(), 1u);
}

TEST_F(SchedulerTest, OutOfBlocksPreemptsTheNewestSequenceWhichRecomputesLater) {
  kv_ = std::make_unique<KvBlockManager>(4, 4);  // 16 tokens
  Sequence* old_seq = Add(8, 6);
  Sequence* new_seq = Add(8, 6);
  Complete(ScheduleStep({8, 100}, running_, waiting_, *kv_));  // 8 tokens each: all 4 blocks
  // Both need a third block for position 8: none is free, so the newest is preempted.
  Schedule sched = ScheduleStep({8, 100}, running_, waiting_, *kv_);
  ASSERT_EQ(sched.preempted.size(), 1u);
  EXPECT_EQ(sched.preempted[0], new_seq);
  EXPECT_EQ(new_seq->computed, 0);
  EXPECT_TRUE(new_seq->blocks.empty());
  EXPECT_EQ(waiting_.front(), new_seq);
  ASSERT_EQ(sched.chunks.size(), 1u);
  EXPECT_EQ(sched.chunks[0].seq, old_seq);
  Complete(sched);
  // Once the old sequence finishes, the new one recomputes prompt + generated and goes on.
  for (int step = 0; finished_ == 0; ++step) {
    ASSERT_LT(step, 100) << "the old sequence never finished";
    Complete(ScheduleStep({8, 100}, running_, waiting_, *kv_));
  }
  Schedule again = ScheduleStep({8, 100}, running_, waiting_, *kv_);
  ASSERT_EQ(again.chunks.size(), 1u);
  EXPECT_EQ(again.chunks[0].seq, new_seq);
  EXPECT_EQ(again.chunks[0].start, 0);
  EXPECT_EQ(again.chunks[0].count, new_seq->known());
  EXPECT_TRUE(again.chunks[0].sample);
}

// A random workload on a small cache with two steps in flight (as with PP = 2): every
// request finishes with all its tokens, and blocks are never lost or shared.
TEST_F(SchedulerTest, RandomWorkloadFinishesEveryRequestWithoutLeakingBlocks) {
  kv_ = std::make_unique<KvBlockManager>(24, 4);
  std::mt19937 rng(3);
  for (int i = 0; i < 40; ++i) Add(1 + rng() % 30, 1 + rng() % 20);
  std::deque<Schedule> in_flight;
  int steps = 0;
  while (finished_ < 40) {
    ASSERT_LT(++steps, 5000) << "no progress";
    Schedule sched = ScheduleStep({6, 24}, running_, waiting_, *kv_);
    if (!sched.empty()) in_flight.push_back(std::move(sched));
    if (in_flight.size() == 2 || (sched.empty() && !in_flight.empty())) {
      Complete(in_flight.front());
      in_flight.pop_front();
    }
    std::set<int32_t> owned;
    int32_t count = 0;
    for (Sequence* s : running_) {
      for (int32_t b : s->blocks) owned.insert(b);
      count += static_cast<int32_t>(s->blocks.size());
    }
    ASSERT_EQ(static_cast<int32_t>(owned.size()), count) << "a block has two owners";
    ASSERT_EQ(count + kv_->free(), kv_->total()) << "a block was lost";
  }
  for (const auto& s : seqs_) EXPECT_EQ(static_cast<int32_t>(s->generated.size()), s->stop.max_new_tokens);
  EXPECT_EQ(kv_->free(), kv_->total());
}

}  // namespace
}  // namespace tpserve
