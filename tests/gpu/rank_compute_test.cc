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
//  6. StageLink*: the pipeline hand-off of ConnectStages on ONE GPU in ONE process: stage 0
//     and stage 1 of a pp=2 layout connected through tests/gpu/loopback_link.h (a fake 2-rank
//     DeviceCommunicator: device mailboxes ordered by events) give stage-1 logits bit for bit
//     equal to the same stages handing off through host memory, and within the bf16 band of
//     the CPU, over three prefill steps queued before stage 1 takes any (more than the two
//     send slots), an empty step, and decode steps at padded buckets with graph replays; and
//     the warm-up exchange refuses a previous stage of another hidden size or stage, a
//     second call and wiring the layout cannot have.
//  7. TensorParallel (tp 2 and 4): the tensor ranks of one stage as threads on the one GPU, their
//     collectives through tests/gpu/loopback_link.h's HostCollectiveGroup (host round trips,
//     graphs off): prefill and padded decode buckets give every rank the same logits, within
//     the bf16 band of one CPU rank, with a vocabulary whose last shard is shorter; Sample fills
//     tensor rank 0's results only; every rank makes the same collectives.
// Tolerance ("the bf16 band"): normalised error max|cuda - cpu| / max|cpu| <= 3e-2. The CPU
// keeps activations in fp32; the CUDA path rounds each GEMM input and output and the K/V cache
// to bf16 (relative error <= 2^-9 each, about 1e-3 rms). A layer has about nine such
// roundings; with random signs they add up to roughly 3e-3 relative per sub-layer output, and
// three layers (six residual additions), the final norm's bf16 output and the max over ~10^4
// logits take the worst element to about 1e-2 of max|logit|. (A CPU emulation of exactly
// these rounding points on this model and these steps gave 0.0086 at worst.) 3e-2 leaves a
// factor ~3 for what the emulation leaves out (GEMM and softmax summation order, the device's
// expf), while a wrong mask, head mapping, RoPE position or a missing residual add gives
// errors of order 1.
// Without a CUDA device only the HostOnly cases run and the test exits 77 (ctest: skipped).
#include "worker/cuda/cuda_rank_compute.h"
#include "tests/gpu/gpu_test_main.h"
#include "tests/gpu/loopback_link.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/cuda/cuda_status.h"
#include "worker/cpu_rank_compute.h"
#include "worker/layout.h"
#include "worker/rank_compute.h"
#include "worker/sampler.h"
#include "worker/shard_weights.h"

namespace tpserve {
namespace {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const absl::Status assert_ok_status_ = (expr);            \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

constexpr double kBand = 3e-2;       // normalised error, derived at the top of this file
constexpr int64_t kBlockSize = 16;
constexpr int64_t kNumBlocks = 48;

ModelConfig TinyConfig(int sliding_window) {
  ModelConfig c;
  c.architecture = sliding_window > 0 ? Architecture::kMistral : Architecture::kLlama;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0;
  c.sliding_window = sliding_window;
  c.max_position_embeddings = 256;
  c.vocab_size = 500;
  c.torch_dtype = DType::kBF16;
  return c;
}

// ------------------------------- the random model -------------------------------

// A full (unsliced) tensor [rows, cols] of bf16-representable values, uniform in
// `center` +- `scale`, the same for every layout: seeded by the tensor's own id.
std::vector<float> FullTensor(uint32_t id, int64_t rows, int64_t cols, float scale,
                              float center = 0.0f) {
  std::mt19937 rng(0x5eed0000u + id);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> t(rows * cols);
  for (float& v : t) v = Bf16ToF32(F32ToBf16(center + dist(rng)));
  return t;
}

// Rows of the listed [begin, end) ranges and columns [c0, c1) of a [*, cols] tensor, as a
// BF16 matrix.
OwnedMatrix Slice(const std::vector<float>& t, int64_t cols,
                  const std::vector<std::pair<int64_t, int64_t>>& row_ranges, int64_t c0,
                  int64_t c1) {
  std::vector<uint16_t> out;
  int64_t rows = 0;
  for (const auto& [r0, r1] : row_ranges) {
    for (int64_t r = r0; r < r1; ++r, ++rows) {
      for (int64_t c = c0; c < c1; ++c) out.push_back(F32ToBf16(t[r * cols + c]));
    }
  }
  OwnedMatrix m;
  m.bytes.resize(out.size() * 2);
  std::memcpy(m.bytes.data(), out.data(), m.bytes.size());
  m.view = {m.bytes.data(), DType::kBF16, rows, c1 - c0};
  return m;
}

// This rank's slices of the model (the Megatron split of DESIGN.md), built from scratch on
// every call so that each backend owns an independent copy with the same values.
ShardWeights MakeShardWeights(const ModelConfig& c, const Layout& l) {
  const int64_t h = c.hidden_size, d = c.head_dim, inter = c.intermediate_size;
  const int64_t q = c.num_heads * d, kv = c.num_kv_heads * d;
  const float in_h = std::sqrt(3.0f / static_cast<float>(h));
  ShardWeights w;
  auto add = [&](const OwnedMatrix& m) { w.bytes += m.bytes.size(); };
  for (int layer = l.layer_begin; layer < l.layer_end; ++layer) {
    const uint32_t id = 100u * static_cast<uint32_t>(layer + 1);
    LayerWeights lw;
    lw.input_norm = FullTensor(id + 1, 1, h, 0.1f, 1.0f);
    lw.post_norm = FullTensor(id + 2, 1, h, 0.1f, 1.0f);
    const std::vector<float> wq = FullTensor(id + 3, q, h, in_h);
    const std::vector<float> wk = FullTensor(id + 4, kv, h, in_h);
    const std::vector<float> wv = FullTensor(id + 5, kv, h, in_h);
    std::vector<float> qkv = wq;
    qkv.insert(qkv.end(), wk.begin(), wk.end());
    qkv.insert(qkv.end(), wv.begin(), wv.end());
    lw.qkv = Slice(qkv, h,
                   {{l.q_head_begin * d, l.q_head_end * d},
                    {q + l.kv_head_begin * d, q + l.kv_head_end * d},
                    {q + kv + l.kv_head_begin * d, q + kv + l.kv_head_end * d}},
                   0, h);
    lw.o = Slice(FullTensor(id + 6, h, q, std::sqrt(3.0f / static_cast<float>(q))), q, {{0, h}},
                 l.q_head_begin * d, l.q_head_end * d);
    std::vector<float> gate_up = FullTensor(id + 7, inter, h, in_h);
    const std::vector<float> up = FullTensor(id + 8, inter, h, in_h);
    gate_up.insert(gate_up.end(), up.begin(), up.end());
    lw.gate_up = Slice(gate_up, h,
                       {{l.mlp_begin, l.mlp_end}, {inter + l.mlp_begin, inter + l.mlp_end}}, 0, h);
    lw.down = Slice(FullTensor(id + 9, h, inter, std::sqrt(3.0f / static_cast<float>(inter))),
                    inter, {{0, h}}, l.mlp_begin, l.mlp_end);
    add(lw.qkv);
    add(lw.o);
    add(lw.gate_up);
    add(lw.down);
    w.bytes += 2 * h * sizeof(float);
    w.layers.push_back(std::move(lw));
  }
  if (l.first_stage()) {
    w.embedding = Slice(FullTensor(1, c.vocab_size, h, 1.0f), h, {{0, c.vocab_size}}, 0, h);
    add(w.embedding);
  }
  if (l.last_stage()) {
    w.final_norm = FullTensor(2, 1, h, 0.1f, 1.0f);
    // Logits of standard deviation ~3: greedy margins well above the bf16 band's errors.
    w.lm_head = Slice(FullTensor(3, c.vocab_size, h, 3.0f * in_h), h,
                      {{l.vocab_begin, l.vocab_end}}, 0, h);
    add(w.lm_head);
    w.bytes += h * sizeof(float);
  }
  return w;
}

Layout LayoutOf(const ModelConfig& c, int tp, int pp, int rank) {
  absl::StatusOr<Layout> l = MakeLayout(c, tp, pp, tp * pp, rank, {});
  EXPECT_TRUE(l.ok()) << l.status();
  return l.ok() ? *l : Layout();
}

std::unique_ptr<RankCompute> Cpu(const ModelConfig& c, const Layout& l) {
  absl::StatusOr<std::unique_ptr<RankCompute>> r =
      CreateCpuRankCompute(c, l, MakeShardWeights(c, l), nullptr);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_TRUE((*r)->AllocateKvCache(kNumBlocks, kBlockSize).ok());
  return std::move(r).value();
}

std::unique_ptr<RankCompute> Cuda(const ModelConfig& c, const Layout& l, bool graphs = true) {
  CudaComputeOptions o;
  o.graphs = graphs;
  o.max_step_tokens = 128;  // the prefill below (106 rows) fits; decode buckets too
  absl::StatusOr<std::unique_ptr<RankCompute>> r =
      CreateCudaRankCompute(c, l, MakeShardWeights(c, l), nullptr, o);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_EQ((*r)->backend(), "cuda");
  absl::StatusOr<int64_t> fit = (*r)->KvBlocksThatFit(kBlockSize);
  EXPECT_TRUE(fit.ok()) << fit.status();
  if (fit.ok()) EXPECT_GE(*fit, kNumBlocks);
  EXPECT_TRUE((*r)->AllocateKvCache(kNumBlocks, kBlockSize).ok());
  EXPECT_EQ((*r)->kv_num_blocks(), kNumBlocks);
  return std::move(r).value();
}

CudaComputeStats StatsOf(const RankCompute& r) {
  const auto* cuda = dynamic_cast<const CudaRankCompute*>(&r);
  EXPECT_NE(cuda, nullptr);
  return cuda != nullptr ? cuda->stats() : CudaComputeStats();
}

// ------------------------------- steps -------------------------------

// Sequences over shuffled KV blocks: their tokens so far and what the next step feeds.
struct Batch {
  struct Seq {
    std::vector<int32_t> blocks;
    int64_t cached = 0;            // positions already in the cache
    std::vector<int32_t> pending;  // tokens of the next step
    std::vector<int32_t> history;  // every token fed so far
  };
  std::vector<Seq> seqs;

  // Prompts of the given lengths (random ids), each with blocks for `extra` more tokens.
  Batch(const std::vector<int64_t>& prompts, int64_t extra, int64_t vocab, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> free(kNumBlocks);
    std::iota(free.begin(), free.end(), 0);
    std::shuffle(free.begin(), free.end(), rng);
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
    size_t next = 0;
    for (int64_t n : prompts) {
      Seq s;
      const int64_t blocks = (n + extra + kBlockSize - 1) / kBlockSize;
      for (int64_t b = 0; b < blocks; ++b) s.blocks.push_back(free.at(next++));
      for (int64_t i = 0; i < n; ++i) s.pending.push_back(token(rng));
      seqs.push_back(std::move(s));
    }
  }
};

// One step's flattened rows over the sequences `active`, as the Engine builds them.
struct HostStep {
  std::vector<int32_t> ids, positions;
  std::vector<int64_t> slots;
  std::vector<kernels::AttentionSeq> seqs;
  std::vector<int64_t> last_rows;  // the last row of each active sequence
  int64_t max_context = 0;
  bool decode = true;

  HostStep(const Batch& b, const std::vector<int>& active) {
    for (int i : active) {
      const Batch::Seq& s = b.seqs[i];
      kernels::AttentionSeq a;
      a.token_begin = static_cast<int64_t>(ids.size());
      a.num_tokens = static_cast<int64_t>(s.pending.size());
      a.start_pos = s.cached;
      a.block_table = s.blocks.data();
      a.num_blocks = static_cast<int64_t>(s.blocks.size());
      seqs.push_back(a);
      if (a.num_tokens != 1) decode = false;
      for (int64_t k = 0; k < a.num_tokens; ++k) {
        const int64_t pos = s.cached + k;
        ids.push_back(s.pending[k]);
        positions.push_back(static_cast<int32_t>(pos));
        slots.push_back(int64_t{s.blocks.at(pos / kBlockSize)} * kBlockSize + pos % kBlockSize);
      }
      last_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
      max_context = std::max(max_context, s.cached + a.num_tokens);
    }
  }
  StepRows rows() const {
    StepRows r;
    r.token_ids = ids;
    r.positions = positions;
    r.slots = slots;
    r.seqs = seqs;
    r.max_context = max_context;
    r.decode = decode;
    return r;
  }
  std::vector<int64_t> all_rows() const {
    std::vector<int64_t> v(ids.size());
    std::iota(v.begin(), v.end(), 0);
    return v;
  }
};

// Moves the step's tokens into the cache and queues `next[k]` for active sequence k.
void Advance(Batch& b, const std::vector<int>& active, const std::vector<int32_t>& next) {
  for (size_t k = 0; k < active.size(); ++k) {
    Batch::Seq& s = b.seqs[active[k]];
    s.cached += static_cast<int64_t>(s.pending.size());
    s.history.insert(s.history.end(), s.pending.begin(), s.pending.end());
    s.pending = {next[k]};
  }
}

// max|got - want| / max|want|; infinity for a size mismatch or a non-finite value.
double NormalisedError(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size() || want.empty()) return std::numeric_limits<double>::infinity();
  double max_ref = 0.0, max_err = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) {
      return std::numeric_limits<double>::infinity();
    }
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
    max_err = std::max(max_err, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  return max_ref > 0.0 ? max_err / max_ref : max_err;
}

// The first maximum of each row and the gap to the runner-up.
struct Top {
  int32_t token = 0;
  float margin = 0.0f;
};
Top TopOf(const float* row, int64_t vocab) {
  Top t;
  float second = -std::numeric_limits<float>::infinity();
  for (int64_t i = 1; i < vocab; ++i) {
    if (row[i] > row[t.token]) {
      second = row[t.token];
      t.token = static_cast<int32_t>(i);
    } else {
      second = std::max(second, row[i]);
    }
  }
  t.margin = row[t.token] - second;
  return t;
}

absl::Status Logits(RankCompute& r, const std::vector<int64_t>& rows, std::vector<float>* out) {
  return r.Logits(rows, out);
}

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
  std::vector<TpRankRun> runs(tp);
  std::vector<std::thread> threads;
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
  EXPECT_EQ(group.collectives(), static_cast<int>(steps.size()) * (2 * c.num_layers + 2));
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
