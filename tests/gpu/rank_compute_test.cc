// CudaRankCompute (worker/cuda/cuda_rank_compute.h) against CpuRankCompute on a tiny random
// model built here (3 layers, hidden 256, 4 query / 2 KV heads of 64, SwiGLU 512, vocab 500,
// 256 positions; bf16 weights, so both backends multiply by the very same values):
//  1. CpuAndCudaAgree (sliding window 24 and none): a ragged prefill of three sequences
//     (37, 5 and 64 tokens over shuffled, non-contiguous KV blocks of 16) and 20 decode
//     steps; every step's logits within the bf16 band, greedy tokens equal wherever the CPU's
//     top-1 margin is decisive; decode steps pad 3 sequences to bucket 4 and replay graphs.
//  2. PipelineStagesAgree: a pp=2 layout; stage 0's hidden_out against the CPU's, and stage 1
//     (fed the CPU's stage-0 output) against the CPU's stage 1, prefill and decode.
//  3. SampleMatchesCpuSampler: Sample() with greedy, temperature, top-k, top-p, min-p,
//     repetition penalty and top logprobs against the host sampler on the CUDA logits (equal
//     tokens, logprobs within fp32 noise) and against CpuRankCompute::Sample where the host
//     sampler picks the same token from both backends' logits.
//  4. GraphsOnAndOffAreBitIdentical: the same steps with and without CUDA graphs give the same
//     logits bit for bit, at two padded buckets, and the counters prove graph replays.
//  5. HostOnly.*: creation rejects what the CUDA ops cannot run (head_dim 24, too many query
//     heads per KV head, a TP layout whose head mapping the device attention cannot express,
//     TP without a device communicator) before touching a device, so it runs without a GPU;
//     and the loopback link of 6 refuses a wrong peer and an early receive without a device.
// Tolerance: "the bf16 band", kBand in rank_compute_test_util.h.
// Without a CUDA device only the HostOnly cases run and the test exits 77 (ctest: skipped).
#include "tests/gpu/rank_compute_test_util.h"
#include "tests/gpu/gpu_test_main.h"
#include "tests/gpu/loopback_link.h"

#include <gtest/gtest.h>

namespace tpserve {
namespace {

// ------------------------------- 1. CPU vs CUDA -------------------------------

class CpuAndCudaAgree : public ::testing::TestWithParam<int> {};

TEST_P(CpuAndCudaAgree, PrefillThenGreedyDecode) {
  const ModelConfig c = TinyConfig(GetParam());
  const Layout l = LayoutOf(c, 1, 1, 0);
  std::unique_ptr<RankCompute> cpu = Cpu(c, l), cuda = Cuda(c, l);
  ASSERT_TRUE(cpu && cuda);
  const int64_t vocab = c.vocab_size;
  constexpr int kDecodeSteps = 20;
  Batch batch({37, 5, 64}, kDecodeSteps, vocab, 7);
  const std::vector<int> active = {0, 1, 2};
  int decisive = 0, compared = 0;
  for (int step = 0; step <= kDecodeSteps; ++step) {
    const HostStep hs(batch, active);
    ASSERT_EQ(hs.decode, step > 0);
    ASSERT_OK(cpu->Forward(hs.rows(), nullptr, nullptr));
    ASSERT_OK(cuda->Forward(hs.rows(), nullptr, nullptr));
    // Prefill: every row's logits (the attention of every query, windows included); decode:
    // the one row of each sequence.
    const std::vector<int64_t> rows = hs.all_rows();
    std::vector<float> want, got;
    ASSERT_OK(Logits(*cpu, rows, &want));
    ASSERT_OK(Logits(*cuda, rows, &got));
    const double err = NormalisedError(got, want);
    EXPECT_LE(err, kBand) << "step " << step;
    // Greedy tokens. Where the CPU's margin is decisive (above 0.1 and above twice this row's
    // largest CPU/CUDA difference, so that the band alone cannot flip it) the tokens must be
    // equal and each backend feeds its own; otherwise both are fed the CPU's token so that
    // later steps still compare the same sequences.
    std::vector<int32_t> next;
    for (size_t k = 0; k < active.size(); ++k) {
      const int64_t row = hs.last_rows[k];
      const float* w = want.data() + row * vocab;
      const float* g = got.data() + row * vocab;
      double row_err = 0.0;
      for (int64_t i = 0; i < vocab; ++i) {
        row_err = std::max(row_err, std::fabs(double{w[i]} - g[i]));
      }
      const Top cpu_top = TopOf(w, vocab), cuda_top = TopOf(g, vocab);
      ++compared;
      if (cpu_top.margin > 0.1f && cpu_top.margin > 2 * row_err) {
        ++decisive;
        EXPECT_EQ(cuda_top.token, cpu_top.token) << "step " << step << " seq " << k;
      }
      next.push_back(cpu_top.token);
    }
    if (step < kDecodeSteps) Advance(batch, active, next);
  }
  // Most comparisons must have been decisive, or the token check proved little.
  EXPECT_GE(decisive * 2, compared) << decisive << " of " << compared << " decisive";
  const CudaComputeStats s = StatsOf(*cuda);
  // Prefill eager; decode at bucket 4: the first step eager, then captured and replayed.
  EXPECT_EQ(s.graph_captures, 1);
  EXPECT_EQ(s.graph_launches, kDecodeSteps - 1);
  EXPECT_EQ(s.eager_steps, 2);
}

INSTANTIATE_TEST_SUITE_P(Window, CpuAndCudaAgree, ::testing::Values(24, 0),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return i.param > 0 ? "sliding_window_" + std::to_string(i.param)
                                              : std::string("no_window");
                         });

TEST(CudaRankComputeGpu, ForwardBeforeAllocateKvCacheFails) {
  const ModelConfig c = TinyConfig(0);
  absl::StatusOr<std::unique_ptr<RankCompute>> r = CreateCudaRankCompute(
      c, LayoutOf(c, 1, 1, 0), MakeShardWeights(c, LayoutOf(c, 1, 1, 0)), nullptr, {});
  ASSERT_TRUE(r.ok()) << r.status();
  Batch batch({3}, 0, c.vocab_size, 1);
  const HostStep hs(batch, {0});
  EXPECT_EQ((*r)->Forward(hs.rows(), nullptr, nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<float> logits;
  EXPECT_EQ((*r)->Logits(std::vector<int64_t>{0}, &logits).code(),
            absl::StatusCode::kFailedPrecondition);
}

// ------------------------------- 2. pipeline stages -------------------------------

TEST(CudaRankComputeGpu, PipelineStagesAgree) {
  const ModelConfig c = TinyConfig(24);
  const Layout l0 = LayoutOf(c, 1, 2, 0), l1 = LayoutOf(c, 1, 2, 1);
  ASSERT_EQ(l0.num_layers(), 2);
  ASSERT_EQ(l1.num_layers(), 1);
  std::unique_ptr<RankCompute> cpu0 = Cpu(c, l0), cpu1 = Cpu(c, l1);
  std::unique_ptr<RankCompute> cuda0 = Cuda(c, l0), cuda1 = Cuda(c, l1);
  ASSERT_TRUE(cpu0 && cpu1 && cuda0 && cuda1);
  constexpr int kDecodeSteps = 6;
  Batch batch({37, 5, 64}, kDecodeSteps, c.vocab_size, 11);
  const std::vector<int> active = {0, 1, 2};
  for (int step = 0; step <= kDecodeSteps; ++step) {
    const HostStep hs(batch, active);
    std::vector<float> hidden_cpu, hidden_cuda;
    ASSERT_OK(cpu0->Forward(hs.rows(), nullptr, &hidden_cpu));
    ASSERT_OK(cuda0->Forward(hs.rows(), nullptr, &hidden_cuda));
    ASSERT_EQ(hidden_cuda.size(), hs.ids.size() * c.hidden_size);
    EXPECT_LE(NormalisedError(hidden_cuda, hidden_cpu), kBand) << "stage 0, step " << step;
    // Both last stages take the CPU's stage-0 output, so they compare stage 1 alone.
    ASSERT_OK(cpu1->Forward(hs.rows(), hidden_cpu.data(), nullptr));
    ASSERT_OK(cuda1->Forward(hs.rows(), hidden_cpu.data(), nullptr));
    std::vector<float> want, got;
    ASSERT_OK(Logits(*cpu1, hs.last_rows, &want));
    ASSERT_OK(Logits(*cuda1, hs.last_rows, &got));
    EXPECT_LE(NormalisedError(got, want), kBand) << "stage 1, step " << step;
    std::vector<int32_t> next;
    for (size_t k = 0; k < active.size(); ++k) {
      next.push_back(TopOf(want.data() + k * c.vocab_size, c.vocab_size).token);
    }
    if (step < kDecodeSteps) Advance(batch, active, next);
  }
  std::vector<float> none;
  EXPECT_EQ(cuda0->Logits(std::vector<int64_t>{0}, &none).code(),
            absl::StatusCode::kFailedPrecondition);  // stage 0 has no lm_head
  EXPECT_EQ(StatsOf(*cuda0).graph_launches, kDecodeSteps - 1);
  EXPECT_EQ(StatsOf(*cuda1).graph_launches, kDecodeSteps - 1);
}

// ------------------------------- 3. sampling -------------------------------

TEST(CudaRankComputeGpu, SampleMatchesCpuSampler) {
  const ModelConfig c = TinyConfig(0);
  const Layout l = LayoutOf(c, 1, 1, 0);
  std::unique_ptr<RankCompute> cpu = Cpu(c, l), cuda = Cuda(c, l);
  ASSERT_TRUE(cpu && cuda);
  const int64_t vocab = c.vocab_size;
  Batch batch({37, 5, 64}, 4, vocab, 5);
  const std::vector<int> active = {0, 1, 2};
  std::vector<float> cpu_logits, cuda_logits;
  HostStep hs(batch, active);
  ASSERT_OK(cpu->Forward(hs.rows(), nullptr, nullptr));
  ASSERT_OK(cuda->Forward(hs.rows(), nullptr, nullptr));
  ASSERT_OK(Logits(*cpu, hs.last_rows, &cpu_logits));
  std::vector<int32_t> next;
  for (int k = 0; k < 3; ++k) next.push_back(TopOf(cpu_logits.data() + k * vocab, vocab).token);
  Advance(batch, active, next);
  hs = HostStep(batch, active);  // a decode step: the rows sample from its logits
  ASSERT_OK(cpu->Forward(hs.rows(), nullptr, nullptr));
  ASSERT_OK(cuda->Forward(hs.rows(), nullptr, nullptr));
  ASSERT_OK(Logits(*cpu, hs.last_rows, &cpu_logits));
  ASSERT_OK(Logits(*cuda, hs.last_rows, &cuda_logits));
  ASSERT_LE(NormalisedError(cuda_logits, cpu_logits), kBand);

  struct Params {
    SamplingParams p;
    uint32_t top_logprobs;
    bool penalty;
  };
  auto make = [](float t, float top_p, int32_t top_k, float min_p, float rep, uint64_t seed) {
    SamplingParams p;
    p.temperature = t;
    p.top_p = top_p;
    p.top_k = top_k;
    p.min_p = min_p;
    p.repetition_penalty = rep;
    p.seed = seed;
    return p;
  };
  const std::vector<Params> sets = {
      {make(0.0f, 1.0f, 0, 0.0f, 1.0f, 0), 3, false},     // greedy with top logprobs
      {make(0.8f, 1.0f, 40, 0.0f, 1.0f, 11), 0, false},   // temperature + top-k
      {make(1.0f, 0.9f, 0, 0.0f, 1.0f, 12), 5, false},    // top-p
      {make(0.7f, 0.95f, 50, 0.05f, 1.0f, 13), 0, false}, // everything but the penalty
      {make(1.0f, 1.0f, 0, 0.0f, 1.3f, 14), 2, true},     // repetition penalty
      {make(0.0f, 1.0f, 0, 0.0f, 1.5f, 15), 1, true},     // greedy after the penalty
      {make(1.2f, 1.0f, 1, 0.0f, 1.0f, 16), 0, false},    // top_k 1 is greedy
  };
  int same_host_token = 0, total = 0;
  for (const Params& set : sets) {
    for (uint64_t seed_shift = 0; seed_shift < 4; ++seed_shift) {
      std::vector<SampleRow> rows;
      for (int k = 0; k < 3; ++k) {
        SampleRow r;
        r.row = hs.last_rows[k];
        r.params = set.p;
        r.params.seed += seed_shift * 1000 + static_cast<uint64_t>(k);
        r.position = batch.seqs[k].cached + 1;
        if (set.penalty) r.seen = batch.seqs[k].history;
        r.top_logprobs = set.top_logprobs;
        rows.push_back(r);
      }
      std::vector<SampledToken> from_cpu, from_cuda;
      ASSERT_OK(cpu->Sample(rows, &from_cpu));
      ASSERT_OK(cuda->Sample(rows, &from_cuda));
      ASSERT_EQ(from_cuda.size(), rows.size());
      for (int k = 0; k < 3; ++k) {
        const float* g = cuda_logits.data() + k * vocab;
        const float* w = cpu_logits.data() + k * vocab;
        std::vector<float> scratch(g, g + vocab);
        const std::vector<int32_t> seen(rows[k].seen.begin(), rows[k].seen.end());
        // The device sampler has the host sampler's meaning on the same logits.
        const int32_t host_on_cuda = SampleToken(scratch.data(), vocab, rows[k].params, seen,
                                                 rows[k].position);
        EXPECT_EQ(from_cuda[k].token, host_on_cuda) << "set " << total << " row " << k;
        if (rows[k].top_logprobs > 0) {
          const TokenLogprob want = ComputeLogprobs(g, vocab, from_cuda[k].token,
                                                    rows[k].top_logprobs);
          EXPECT_EQ(from_cuda[k].logprob.token, want.token);
          EXPECT_NEAR(from_cuda[k].logprob.logprob, want.logprob, 1e-4);
          ASSERT_EQ(from_cuda[k].logprob.top.size(), want.top.size());
          for (size_t j = 0; j < want.top.size(); ++j) {
            EXPECT_EQ(from_cuda[k].logprob.top[j].token, want.top[j].token);
            EXPECT_NEAR(from_cuda[k].logprob.top[j].logprob, want.top[j].logprob, 1e-4);
          }
        }
        // Against the CPU backend: where the host sampler picks the same token from both
        // backends' logits, the two computes' samples must agree.
        scratch.assign(w, w + vocab);
        const int32_t host_on_cpu = SampleToken(scratch.data(), vocab, rows[k].params, seen,
                                                rows[k].position);
        EXPECT_EQ(from_cpu[k].token, host_on_cpu);
        if (host_on_cpu == host_on_cuda) {
          ++same_host_token;
          EXPECT_EQ(from_cuda[k].token, from_cpu[k].token) << "set " << total << " row " << k;
        }
      }
      ++total;
    }
  }
  // The greedy sets alone make a third of the rows; most others agree too.
  EXPECT_GE(same_host_token * 2, total * 3) << same_host_token << " of " << total * 3;
}

// ------------------------------- 4. graphs -------------------------------

TEST(CudaRankComputeGpu, GraphsOnAndOffAreBitIdentical) {
  const ModelConfig c = TinyConfig(24);
  const Layout l = LayoutOf(c, 1, 1, 0);
  std::unique_ptr<RankCompute> on = Cuda(c, l, true), off = Cuda(c, l, false);
  ASSERT_TRUE(on && off);
  const int64_t vocab = c.vocab_size;
  Batch batch({37, 5, 64}, 12, vocab, 3);
  // Decode batches of 3 (bucket 4), then 2 (bucket 2), then 3 again (bucket 4's graph).
  std::vector<std::vector<int>> plan = {{0, 1, 2}};  // the prefill
  for (int i = 0; i < 5; ++i) plan.push_back({0, 1, 2});
  for (int i = 0; i < 4; ++i) plan.push_back({0, 2});
  for (int i = 0; i < 2; ++i) plan.push_back({0, 1, 2});
  // A sequence left out of a step keeps its pending token for the next one it joins.
  for (size_t step = 0; step < plan.size(); ++step) {
    const HostStep hs(batch, plan[step]);
    ASSERT_OK(on->Forward(hs.rows(), nullptr, nullptr));
    ASSERT_OK(off->Forward(hs.rows(), nullptr, nullptr));
    std::vector<float> a, b;
    ASSERT_OK(Logits(*on, hs.last_rows, &a));
    ASSERT_OK(Logits(*off, hs.last_rows, &b));
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
        << "step " << step << ": graph replay and eager logits differ";
    std::vector<int32_t> next;
    for (size_t k = 0; k < plan[step].size(); ++k) {
      next.push_back(TopOf(a.data() + k * vocab, vocab).token);
    }
    Advance(batch, plan[step], next);
  }
  const CudaComputeStats s_on = StatsOf(*on), s_off = StatsOf(*off);
  EXPECT_EQ(s_on.graph_captures, 2);  // buckets 4 and 2
  EXPECT_EQ(s_on.graph_launches, 4 + 3 + 2);
  EXPECT_EQ(s_on.eager_steps, 3);  // the prefill and each bucket's first step
  EXPECT_EQ(s_off.graph_captures, 0);
  EXPECT_EQ(s_off.graph_launches, 0);
  EXPECT_EQ(s_off.eager_steps, static_cast<int64_t>(plan.size()));
}

// CudaComputeOptions::programmatic_launch: every kernel waits for its predecessor before it
// touches memory, so eager steps, graph replays, logits and samples are the same bits as
// without. (On the CUDA emulator this also checks that every kernel of a step calls
// WaitForPriorGrids: the emulator aborts a programmatic launch of one that does not.)
TEST(CudaRankComputeGpu, ProgrammaticLaunchGivesTheSameBits) {
  const ModelConfig c = TinyConfig(24);
  const Layout l = LayoutOf(c, 1, 1, 0);
  std::unique_ptr<RankCompute> pdl = Cuda(c, l, true, {}, true), plain = Cuda(c, l, true);
  ASSERT_TRUE(pdl && plain);
  const int64_t vocab = c.vocab_size;
  Batch batch({37, 5, 64}, 12, vocab, 3);
  std::vector<std::vector<int>> plan = {{0, 1, 2}};  // the prefill, then bucket 4 (graphs)
  for (int i = 0; i < 3; ++i) plan.push_back({0, 1, 2});
  for (size_t step = 0; step < plan.size(); ++step) {
    const HostStep hs(batch, plan[step]);
    ASSERT_OK(pdl->Forward(hs.rows(), nullptr, nullptr));
    ASSERT_OK(plain->Forward(hs.rows(), nullptr, nullptr));
    std::vector<float> a, b;
    ASSERT_OK(Logits(*pdl, hs.last_rows, &a));
    ASSERT_OK(Logits(*plain, hs.last_rows, &b));
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "step " << step;
    std::vector<SampleRow> rows;
    for (size_t k = 0; k < plan[step].size(); ++k) {
      SampleRow r;
      r.row = hs.last_rows[k];
      r.params.temperature = 0.9f;
      r.params.top_p = 0.95f;
      r.params.seed = 40 + k;
      r.position = batch.seqs[plan[step][k]].cached + 1;
      r.top_logprobs = 2;
      rows.push_back(r);
    }
    std::vector<SampledToken> x, y;
    ASSERT_OK(pdl->Sample(rows, &x));
    ASSERT_OK(plain->Sample(rows, &y));
    std::vector<int32_t> next;
    for (size_t k = 0; k < rows.size(); ++k) {
      EXPECT_EQ(x[k].token, y[k].token) << "step " << step << " row " << k;
      EXPECT_EQ(x[k].logprob.logprob, y[k].logprob.logprob) << "step " << step << " row " << k;
      next.push_back(y[k].token);
    }
    Advance(batch, plan[step], next);
  }
  EXPECT_GT(StatsOf(*pdl).graph_launches, 0);
}

// CudaComputeOptions::after_op: every op of an eager step, in chain order after a "start";
// nothing from a capture or a replay.
TEST(CudaRankComputeGpu, AfterOpReportsTheOpsOfEagerStepsOnly) {
  const ModelConfig c = TinyConfig(24);
  const Layout l = LayoutOf(c, 1, 1, 0);
  std::vector<std::string> ops;
  std::unique_ptr<RankCompute> cuda = Cuda(c, l, true, [&](const char* op, void* stream) {
    EXPECT_NE(stream, nullptr);
    ops.push_back(op);
  });
  ASSERT_TRUE(cuda);
  auto count = [&](const char* op) { return std::count(ops.begin(), ops.end(), op); };
  Batch batch({37, 5, 64}, 12, c.vocab_size, 3);
  const HostStep prefill(batch, {0, 1, 2});
  ASSERT_OK(cuda->Forward(prefill.rows(), nullptr, nullptr));
  ASSERT_FALSE(ops.empty());
  EXPECT_EQ(ops.front(), "start");
  EXPECT_EQ(count("start"), 1);
  EXPECT_EQ(count("embedding"), 1);
  for (const char* op : {"qkv GEMM", "rope + kv write", "attention", "o GEMM",
                         "gate_up GEMM + swiglu", "down GEMM"}) {
    EXPECT_EQ(count(op), c.num_layers) << op;
  }
  EXPECT_EQ(count("norms"), 2 * c.num_layers + 1);  // two per layer, then the final norm
  EXPECT_EQ(count("all-reduce"), 0);                // no tensor group
  ops.clear();
  std::vector<float> logits;
  ASSERT_OK(Logits(*cuda, prefill.last_rows, &logits));  // not consecutive rows: gathered
  EXPECT_EQ(ops, (std::vector<std::string>{"start", "logits rows", "logits GEMM"}));

  // Decode at bucket 4: the first step is eager (reported; its capture is not), the next two
  // replay the graph and report nothing.
  auto advance_greedily = [&] {
    std::vector<int32_t> next;
    for (int64_t k = 0; k < 3; ++k) {
      next.push_back(TopOf(logits.data() + k * c.vocab_size, c.vocab_size).token);
    }
    Advance(batch, {0, 1, 2}, next);
  };
  advance_greedily();
  for (int step = 0; step < 3; ++step) {
    const HostStep hs(batch, {0, 1, 2});
    ops.clear();
    ASSERT_OK(cuda->Forward(hs.rows(), nullptr, nullptr));
    EXPECT_EQ(count("attention"), step == 0 ? c.num_layers : 0) << "decode step " << step;
    ASSERT_OK(Logits(*cuda, hs.last_rows, &logits));
    advance_greedily();
  }
  EXPECT_EQ(StatsOf(*cuda).graph_launches, 2);
}

// ------------------------------- 5. host-only checks -------------------------------

absl::Status CreateWith(const ModelConfig& c, int tp, DeviceCommunicator* group = nullptr) {
  absl::StatusOr<Layout> l = MakeLayout(c, tp, 1, tp, 0, {});
  if (!l.ok()) return l.status();
  // Empty weights: the checks below come before the weights' shapes are looked at.
  return CreateCudaRankCompute(c, *l, ShardWeights(), group, {}).status();
}

TEST(HostOnly, RejectsHeadDim24) {
  ModelConfig c = TinyConfig(0);
  c.head_dim = 24;
  const absl::Status s = CreateWith(c, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("the CUDA backend supports head_dim 64 and 128; this model has 24"),
            std::string::npos)
      << s;
}

TEST(HostOnly, RejectsMoreQueryHeadsPerKvHeadThanTheDecodeKernelTakes) {
  ModelConfig c = TinyConfig(0);
  c.num_heads = 32;
  c.num_kv_heads = 1;
  c.hidden_size = 2048;
  const absl::Status s = CreateWith(c, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("query heads per KV head"), std::string::npos) << s;
}

TEST(HostOnly, RejectsTpLayoutWhoseHeadMappingTheDeviceCannotExpress) {
  // 12 query heads over 3 KV heads (groups of 4) at tp=2: rank 0 holds query heads 0..5, which
  // read KV heads 0,0,0,0,1,1; the device maps local head i to i / 3 (0,0,0,1,1,1).
  ModelConfig c = TinyConfig(0);
  c.num_heads = 12;
  c.num_kv_heads = 3;
  c.hidden_size = 768;
  const absl::Status s = CreateWith(c, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("cannot express"), std::string::npos) << s;
}

TEST(HostOnly, AcceptsTheHeadMappingOfReplicatedKvHeads) {
  // tp=4 > 2 KV heads: each rank's one query head reads one replicated KV head. The mapping
  // check passes, so creation gets as far as the weights (empty here: InvalidArgument naming
  // them) rather than the head mapping.
  ModelConfig c = TinyConfig(0);
  class OneOfFour : public DeviceCommunicator {
   public:
    int rank() const override { return 0; }
    int size() const override { return 4; }
    absl::Status AllReduceSum(void*, size_t, DeviceDType, void*) override {
      return absl::OkStatus();
    }
    absl::Status AllGather(const void*, size_t, void*, void*) override { return absl::OkStatus(); }
    absl::Status Send(const void*, size_t, int, void*) override { return absl::OkStatus(); }
    absl::Status Recv(void*, size_t, int, void*) override { return absl::OkStatus(); }
  } group;
  const absl::Status s = CreateWith(c, 4, &group);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("weights:"), std::string::npos) << s;
}

TEST(HostOnly, LoopbackLinkRefusesAWrongPeerAndAnEarlyReceiveWithoutADevice) {
  testing::LoopbackLink link;
  EXPECT_EQ(link.end(0).rank(), 0);
  EXPECT_EQ(link.end(1).rank(), 1);
  EXPECT_EQ(link.end(1).size(), 2);
  int32_t x = 0;  // never copied: each call below fails before it enqueues anything
  EXPECT_EQ(link.end(0).Send(&x, 4, 0, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(link.end(1).Recv(&x, 4, 1, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(link.end(1).Recv(&x, 4, 0, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(link.end(0).AllReduceSum(&x, 1, DeviceDType::kF32, nullptr).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(link.sent(0) + link.pending(0), 0);
}

// What --backend auto asks before it picks cuda: the same refusals, without weights or device.
TEST(HostOnly, BackendSupportNamesWhatTheKernelsCannotRun) {
  const ModelConfig ok = TinyConfig(24);
  EXPECT_TRUE(CudaBackendSupports(ok, LayoutOf(ok, 1, 1, 0)).ok());
  EXPECT_TRUE(CudaBackendSupports(ok, LayoutOf(ok, 2, 1, 1)).ok());
  ModelConfig hd24 = TinyConfig(0);
  hd24.head_dim = 24;
  const absl::Status s = CudaBackendSupports(hd24, LayoutOf(hd24, 1, 1, 0));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("head_dim 64 and 128; this model has 24"), std::string::npos) << s;
  ModelConfig wide = TinyConfig(0);  // 32 query heads per KV head: above the decode kernel's 16
  wide.num_heads = 32;
  wide.num_kv_heads = 1;
  EXPECT_EQ(CudaBackendSupports(wide, LayoutOf(wide, 1, 1, 0)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostOnly, RejectsTensorParallelismWithoutADeviceCommunicator) {
  const absl::Status s = CreateWith(TinyConfig(0), 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("device communicator"), std::string::npos) << s;
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  return tpserve::testing::RunGpuTests(argc, argv, "rank_compute_test",
                                       tpserve::CudaDeviceCount(), "HostOnly.*");
}
