// CudaRankCompute GPU tests of the parallel paths on ONE GPU (see rank_compute_test.cc for the
// rest and main()):
//  - StageLink*: the pipeline hand-off of ConnectStages on ONE GPU in ONE process: stage 0
//    and stage 1 of a pp=2 layout connected through tests/gpu/loopback_link.h (a fake 2-rank
//    DeviceCommunicator: device mailboxes ordered by events) give stage-1 logits bit for bit
//    equal to the same stages handing off through host memory, and within the bf16 band of
//    the CPU, over three prefill steps queued before stage 1 takes any (more than the two
//    send slots), an empty step, and decode steps at padded buckets with graph replays; and
//    the warm-up exchange refuses a previous stage of another hidden size or stage, a
//    second call and wiring the layout cannot have.
//  - TensorParallel (tp 2 and 4): the tensor ranks of one stage as threads on the one GPU, their
//    collectives through tests/gpu/loopback_link.h's HostCollectiveGroup (host round trips,
//    graphs off): prefill and padded decode buckets give every rank the same logits, within
//    the bf16 band of one CPU rank, with a vocabulary whose last shard is shorter; Sample fills
//    tensor rank 0's results only; every rank makes the same collectives.
#include "tests/gpu/rank_compute_test_util.h"
#include "tests/gpu/loopback_link.h"

#include <gtest/gtest.h>

namespace tpserve {
namespace {

// ------------------------------- 6. the stage link -------------------------------

TEST(CudaRankComputeGpu, StageLinkOnOneGpuMatchesTheHostHandOffBitForBit) {
  const ModelConfig c = TinyConfig(24);
  const Layout l0 = LayoutOf(c, 1, 2, 0), l1 = LayoutOf(c, 1, 2, 1);
  const int64_t vocab = c.vocab_size;
  // Declared before the computes, so destroyed after them: their destructors wait for the
  // sends into its mailboxes.
  testing::LoopbackLink link;
  std::unique_ptr<RankCompute> cpu0 = Cpu(c, l0), cpu1 = Cpu(c, l1);
  std::unique_ptr<RankCompute> linked0 = Cuda(c, l0), linked1 = Cuda(c, l1);
  std::unique_ptr<RankCompute> host0 = Cuda(c, l0), host1 = Cuda(c, l1);
  ASSERT_TRUE(cpu0 && cpu1 && linked0 && linked1 && host0 && host1);
  // Stage 0 first: its warm-up send must be called before stage 1's receive (the fake
  // completes a send without its receiver; over NCCL the two calls need two threads).
  ASSERT_OK(linked0->ConnectStages(nullptr, -1, &link.end(0), 1));
  EXPECT_EQ(link.pending(0), 1);  // the hello, waiting for stage 1
  ASSERT_OK(linked1->ConnectStages(&link.end(1), 0, nullptr, -1));
  EXPECT_EQ(link.pending(0), 0);
  EXPECT_EQ(link.sent(1), 0);  // the last stage sends nothing

  // Rounds: stage 0 takes a round's steps back to back, then stage 1 takes them. Round 0
  // prefills in three steps (the first ragged: 37 and 5 tokens), so three sends wait at once,
  // one more than the send slots: the third reuses the first's slot behind its send. Then an
  // empty step (nothing crosses the link) and decode steps: 3 sequences (bucket 4 with a
  // padded row), all 4 (bucket 4's graph again), 2 (bucket 2); the first step of each bucket
  // runs eagerly and is captured, later ones receive before a graph replay.
  Batch batch({37, 5, 64, 9}, 9, vocab, 17);
  std::vector<std::vector<std::vector<int>>> rounds = {{{0, 1}, {2}, {3}}, {{}}};
  for (int i = 0; i < 5; ++i) rounds.push_back({{0, 1, 2}});
  for (int i = 0; i < 2; ++i) rounds.push_back({{0, 1, 2, 3}});
  for (int i = 0; i < 2; ++i) rounds.push_back({{1, 3}});
  int sends = 1;  // the hello
  for (size_t round = 0; round < rounds.size(); ++round) {
    std::vector<HostStep> steps;
    for (const std::vector<int>& active : rounds[round]) steps.emplace_back(batch, active);
    std::vector<std::vector<float>> hidden_host(steps.size()), hidden_cpu(steps.size());
    int queued = 0;
    for (size_t k = 0; k < steps.size(); ++k) {
      const StepRows rows = steps[k].rows();
      ASSERT_OK(linked0->Forward(rows, nullptr, nullptr));  // sends instead of hidden_out
      ASSERT_OK(host0->Forward(rows, nullptr, &hidden_host[k]));
      ASSERT_OK(cpu0->Forward(rows, nullptr, &hidden_cpu[k]));
      if (rows.tokens() > 0) ++queued;
    }
    sends += queued;
    EXPECT_EQ(link.sent(0), sends) << "round " << round;
    EXPECT_EQ(link.pending(0), queued) << "round " << round;  // Forward did not wait for them
    for (size_t k = 0; k < steps.size(); ++k) {
      const HostStep& hs = steps[k];
      ASSERT_OK(linked1->Forward(hs.rows(), nullptr, nullptr));  // receives instead of hidden_in
      ASSERT_OK(host1->Forward(hs.rows(), hidden_host[k].data(), nullptr));
      ASSERT_OK(cpu1->Forward(hs.rows(), hidden_cpu[k].data(), nullptr));
      if (hs.ids.empty()) continue;
      // Prefill: every row (each query's attention); decode: each sequence's one row.
      const std::vector<int64_t> rows = hs.decode ? hs.last_rows : hs.all_rows();
      std::vector<float> linked, host, cpu;
      ASSERT_OK(Logits(*linked1, rows, &linked));
      ASSERT_OK(Logits(*host1, rows, &host));
      ASSERT_OK(Logits(*cpu1, rows, &cpu));
      ASSERT_EQ(linked.size(), host.size());
      EXPECT_EQ(std::memcmp(linked.data(), host.data(), linked.size() * sizeof(float)), 0)
          << "round " << round << " step " << k << ": the link and the host hand-off differ";
      EXPECT_LE(NormalisedError(linked, cpu), kBand) << "round " << round << " step " << k;
      std::vector<int32_t> next;
      for (size_t q = 0; q < hs.last_rows.size(); ++q) {
        const int64_t at = hs.decode ? static_cast<int64_t>(q) : hs.last_rows[q];
        next.push_back(TopOf(cpu.data() + at * vocab, vocab).token);
      }
      Advance(batch, rounds[round][k], next);
    }
    EXPECT_EQ(link.pending(0), 0) << "round " << round;
  }
  for (const RankCompute* r : {linked0.get(), linked1.get(), host0.get(), host1.get()}) {
    const CudaComputeStats s = StatsOf(*r);
    EXPECT_EQ(s.eager_steps, 3 + 2);    // the prefill steps and each bucket's first step
    EXPECT_EQ(s.graph_captures, 2);     // buckets 4 and 2
    EXPECT_EQ(s.graph_launches, 6 + 1);
  }
}

// Sends a warm-up hello ([hidden size, stage] int32, as ConnectStages sends it) from rank 0 of
// `link`, as a previous stage would; `buffer` holds it and must outlive the send.
absl::Status SendHello(testing::LoopbackLink& link, int32_t hidden, int32_t stage,
                       kernels::cuda::DeviceBuffer& buffer) {
  absl::StatusOr<kernels::cuda::DeviceBuffer> b = kernels::cuda::DeviceBuffer::Allocate(8);
  if (!b.ok()) return b.status();
  buffer = std::move(b).value();
  const int32_t hello[2] = {hidden, stage};
  if (absl::Status s = buffer.CopyFromHost(hello, 8); !s.ok()) return s;
  return link.end(0).Send(buffer.data(), 8, 1, /*stream=*/nullptr);
}

TEST(CudaRankComputeGpu, StageLinkWarmUpRefusesAnotherHiddenSizeOrStageAndBadWiring) {
  const ModelConfig c = TinyConfig(0);
  const Layout l0 = LayoutOf(c, 1, 2, 0), l1 = LayoutOf(c, 1, 2, 1);
  kernels::cuda::DeviceBuffer received, bad_size, bad_stage;
  testing::LoopbackLink link;
  std::unique_ptr<RankCompute> first = Cuda(c, l0), wrong_size = Cuda(c, l1),
                               wrong_stage = Cuda(c, l1);
  ASSERT_TRUE(first && wrong_size && wrong_stage);
  // Links the layout cannot have, or bad peers: refused before anything reaches the link.
  EXPECT_EQ(first->ConnectStages(&link.end(1), 0, nullptr, -1).code(),
            absl::StatusCode::kInvalidArgument);  // from a previous stage on the first stage
  EXPECT_EQ(first->ConnectStages(nullptr, -1, &link.end(0), 0).code(),
            absl::StatusCode::kInvalidArgument);  // the peer is this rank
  EXPECT_EQ(first->ConnectStages(nullptr, -1, &link.end(0), 2).code(),
            absl::StatusCode::kInvalidArgument);  // the peer is outside the group
  EXPECT_EQ(wrong_size->ConnectStages(nullptr, -1, &link.end(0), 1).code(),
            absl::StatusCode::kInvalidArgument);  // to a next stage on the last stage
  EXPECT_EQ(link.sent(0) + link.sent(1), 0);
  // Those did not use up the one call: a correct one connects and sends [256, 0].
  ASSERT_OK(first->ConnectStages(nullptr, -1, &link.end(0), 1));
  EXPECT_EQ(first->ConnectStages(nullptr, -1, &link.end(0), 1).code(),
            absl::StatusCode::kFailedPrecondition);  // called twice
  ASSERT_EQ(link.pending(0), 1);
  {
    absl::StatusOr<kernels::cuda::DeviceBuffer> b = kernels::cuda::DeviceBuffer::Allocate(8);
    ASSERT_TRUE(b.ok()) << b.status();
    received = std::move(b).value();
    ASSERT_OK(link.end(1).Recv(received.data(), 8, 0, /*stream=*/nullptr));
    int32_t hello[2] = {-1, -1};
    ASSERT_OK(received.CopyToHost(hello, 8));  // after the receive: same (legacy) stream
    EXPECT_EQ(hello[0], c.hidden_size);
    EXPECT_EQ(hello[1], 0);
  }
  // A previous stage of another hidden size, then of the wrong stage.
  ASSERT_OK(SendHello(link, 128, 0, bad_size));
  absl::Status s = wrong_size->ConnectStages(&link.end(1), 0, nullptr, -1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("connects stage 0 of hidden size 128 to stage 1 of hidden size 256"),
            std::string::npos)
      << s;
  ASSERT_OK(SendHello(link, 256, 1, bad_stage));
  s = wrong_stage->ConnectStages(&link.end(1), 0, nullptr, -1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("connects stage 1 of hidden size 256 to stage 1 of hidden size 256"),
            std::string::npos)
      << s;
  // A failed connection was the one call: another is refused without touching the link.
  s = wrong_stage->ConnectStages(&link.end(1), 0, nullptr, -1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("called twice"), std::string::npos) << s;
  EXPECT_EQ(link.pending(0), 0);
}

// ------------------------------- 7. tensor parallelism -------------------------------

// What one tensor rank of TensorParallel returned, step by step.
struct TpRankRun {
  absl::Status status;
  std::vector<std::vector<float>> logits;          // per step: the last rows' logits
  std::vector<std::vector<SampledToken>> sampled;  // per step: Sample() of the last rows
};

// The sampled rows of a TensorParallel step: greedy with two top logprobs for even sequences,
// temperature 0.8 with top-k 40 for odd ones.
std::vector<SampleRow> TpSampleRows(const HostStep& hs, const Batch& batch,
                                    const std::vector<int>& active) {
  std::vector<SampleRow> rows;
  for (size_t k = 0; k < active.size(); ++k) {
    SampleRow r;
    r.row = hs.last_rows[k];
    if (k % 2 == 1) {
      r.params.temperature = 0.8f;
      r.params.top_k = 40;
      r.params.seed = 1000 + k;
    } else {
      r.params.temperature = 0.0f;
      r.top_logprobs = 2;
    }
    r.position = batch.seqs[active[k]].cached + static_cast<int64_t>(hs.seqs[k].num_tokens);
    rows.push_back(r);
  }
  return rows;
}

// TP = GetParam() ranks of one stage, each a CudaRankCompute driven by its own thread on the
// one GPU, their all-reduces and vocab all-gathers through testing::HostCollectiveGroup (host
// round trips, so graphs off: a multi-GPU NCCL run is the only other place these paths run).
// The vocabulary is 501, so its shards of ceil(501 / tp) rows end with a shorter one that is
// padded for the gather. Over a ragged prefill and decode steps at buckets 4 (a padded row in
// every all-reduce) and 2: every rank's logits are the same full rows, within the bf16 band of
// one CPU rank holding the whole model; Sample fills tensor rank 0's results only (greedy =
// the argmax of those logits, the temperature rows = the host sampler on them) and leaves the
// other ranks' at token -1; and every rank made the same collectives.
class TensorParallel : public ::testing::TestWithParam<int> {};

TEST_P(TensorParallel, RanksGiveOneCpuRanksLogitsAndOnlyRankZeroSamples) {
  const int tp = GetParam();
  ModelConfig c = TinyConfig(24);
  c.vocab_size = 501;
  const int64_t vocab = c.vocab_size;
  std::unique_ptr<RankCompute> cpu = Cpu(c, LayoutOf(c, 1, 1, 0));
  ASSERT_TRUE(cpu);
  ASSERT_GT(LayoutOf(c, tp, 1, 0).vocab_shard * tp, vocab);  // the last shard is shorter

  // The steps, each feeding the CPU's greedy tokens, and the CPU's logits of their last rows.
  std::vector<std::vector<int>> plan = {{0, 1, 2}};
  for (int i = 0; i < 3; ++i) plan.push_back({0, 1, 2});
  for (int i = 0; i < 2; ++i) plan.push_back({0, 2});
  Batch batch({37, 5, 64}, 8, vocab, 29);
  std::vector<HostStep> steps;
  std::vector<std::vector<SampleRow>> sample_rows;
  std::vector<std::vector<float>> want;
  for (const std::vector<int>& active : plan) {
    steps.emplace_back(batch, active);
    const HostStep& hs = steps.back();
    sample_rows.push_back(TpSampleRows(hs, batch, active));
    ASSERT_OK(cpu->Forward(hs.rows(), nullptr, nullptr));
    std::vector<float> w;
    ASSERT_OK(Logits(*cpu, hs.last_rows, &w));
    std::vector<int32_t> next;
    for (size_t k = 0; k < active.size(); ++k) {
      next.push_back(TopOf(w.data() + k * vocab, vocab).token);
    }
    want.push_back(std::move(w));
    Advance(batch, active, next);
  }
  ASSERT_TRUE(steps[1].decode);

  testing::HostCollectiveGroup group(tp);
  std::vector<std::unique_ptr<RankCompute>> ranks;
  for (int t = 0; t < tp; ++t) {
    const Layout l = LayoutOf(c, tp, 1, t);
    CudaComputeOptions o;
    o.graphs = false;
    o.max_step_tokens = 128;
    absl::StatusOr<std::unique_ptr<RankCompute>> r =
        CreateCudaRankCompute(c, l, MakeShardWeights(c, l), &group.end(t), o);
    ASSERT_TRUE(r.ok()) << "tensor rank " << t << ": " << r.status();
    ASSERT_OK((*r)->AllocateKvCache(kNumBlocks, kBlockSize));
    ranks.push_back(std::move(r).value());
  }
  // The warm-up the Engine runs before sizing the KV cache: its collectives only, and the
  // stale values it leaves in the buffers change no logits below.
  std::vector<absl::Status> warm(tp);
  std::vector<std::thread> threads;
  for (int t = 0; t < tp; ++t) {
    threads.emplace_back([&, t] {
      warm[t] = ranks[t]->PrepareCollectives();
      if (!warm[t].ok()) group.Abort();
    });
  }
  for (std::thread& th : threads) th.join();
  threads.clear();
  for (int t = 0; t < tp; ++t) ASSERT_TRUE(warm[t].ok()) << "tensor rank " << t << ": " << warm[t];
  // All-reduces at rows 1, 2, ..., 128 (= the capacity); all-gathers at rows 1, ..., 128.
  const int warm_collectives = group.collectives();
  EXPECT_EQ(warm_collectives, 8 + 8);

  std::vector<TpRankRun> runs(tp);
  for (int t = 0; t < tp; ++t) {
    threads.emplace_back([&, t] {
      TpRankRun& run = runs[t];
      RankCompute& r = *ranks[t];
      for (size_t s = 0; s < steps.size() && run.status.ok(); ++s) {
        std::vector<float> logits;
        std::vector<SampledToken> sampled;
        run.status = r.Forward(steps[s].rows(), nullptr, nullptr);
        if (run.status.ok()) run.status = r.Logits(steps[s].last_rows, &logits);
        if (run.status.ok()) run.status = r.Sample(sample_rows[s], &sampled);
        run.logits.push_back(std::move(logits));
        run.sampled.push_back(std::move(sampled));
      }
      if (!run.status.ok()) group.Abort();  // the other ranks must not wait for this one
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < tp; ++t) {
    ASSERT_TRUE(runs[t].status.ok()) << "tensor rank " << t << ": " << runs[t].status;
  }

  for (size_t s = 0; s < steps.size(); ++s) {
    const std::vector<float>& got = runs[0].logits[s];
    EXPECT_LE(NormalisedError(got, want[s]), kBand) << "tp " << tp << " step " << s;
    for (int t = 1; t < tp; ++t) {
      ASSERT_EQ(runs[t].logits[s].size(), got.size());
      EXPECT_EQ(std::memcmp(runs[t].logits[s].data(), got.data(), got.size() * sizeof(float)), 0)
          << "tp " << tp << " step " << s << ": tensor rank " << t << " reassembled other rows";
    }
    const std::vector<SampleRow>& rows = sample_rows[s];
    ASSERT_EQ(runs[0].sampled[s].size(), rows.size());
    for (size_t k = 0; k < rows.size(); ++k) {
      const SampledToken& o = runs[0].sampled[s][k];
      const float* g = got.data() + k * vocab;
      std::vector<float> scratch(g, g + vocab);
      EXPECT_EQ(o.token, SampleToken(scratch.data(), vocab, rows[k].params, {}, rows[k].position))
          << "tp " << tp << " step " << s << " row " << k;
      if (rows[k].top_logprobs > 0) {
        EXPECT_EQ(o.token, TopOf(g, vocab).token) << "step " << s << " row " << k;
        EXPECT_EQ(o.logprob.token, o.token);
        EXPECT_EQ(o.logprob.top.size(), 2u);
      }
    }
    for (int t = 1; t < tp; ++t) {
      ASSERT_EQ(runs[t].sampled[s].size(), rows.size());
      for (const SampledToken& o : runs[t].sampled[s]) {
        EXPECT_EQ(o.token, -1) << "tensor rank " << t << " filled a sampled token";
      }
    }
  }
  // Per step: two all-reduces per layer, then one vocab all-gather each for Logits and Sample.
  EXPECT_EQ(group.collectives() - warm_collectives,
            static_cast<int>(steps.size()) * (2 * c.num_layers + 2));
  for (int t = 0; t < tp; ++t) {
    const CudaComputeStats st = StatsOf(*ranks[t]);
    EXPECT_EQ(st.eager_steps, static_cast<int64_t>(steps.size()));
    EXPECT_EQ(st.graph_launches, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, TensorParallel, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return "tp" + std::to_string(i.param);
                         });

}  // namespace
}  // namespace tpserve
