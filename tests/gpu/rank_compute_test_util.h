// Shared by the CudaRankCompute GPU tests (rank_compute_test.cc, rank_compute_parallel_test.cc):
// the tiny random model, its per-rank weights, CPU and CUDA computes, step batches and the
// comparisons. Each test file gets its own copy (anonymous namespace).
//
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
#pragma once

#include "tests/gpu/loopback_link.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
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

#include "worker/cuda/cuda_rank_compute.h"

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

inline ModelConfig TinyConfig(int sliding_window) {
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
inline std::vector<float> FullTensor(uint32_t id, int64_t rows, int64_t cols, float scale,
                              float center = 0.0f) {
  std::mt19937 rng(0x5eed0000u + id);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> t(rows * cols);
  for (float& v : t) v = Bf16ToF32(F32ToBf16(center + dist(rng)));
  return t;
}

// Rows of the listed [begin, end) ranges and columns [c0, c1) of a [*, cols] tensor, as a
// BF16 matrix.
inline OwnedMatrix Slice(const std::vector<float>& t, int64_t cols,
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
inline ShardWeights MakeShardWeights(const ModelConfig& c, const Layout& l) {
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

inline Layout LayoutOf(const ModelConfig& c, int tp, int pp, int rank) {
  absl::StatusOr<Layout> l = MakeLayout(c, tp, pp, tp * pp, rank, {});
  EXPECT_TRUE(l.ok()) << l.status();
  return l.ok() ? *l : Layout();
}

inline std::unique_ptr<RankCompute> Cpu(const ModelConfig& c, const Layout& l) {
  absl::StatusOr<std::unique_ptr<RankCompute>> r =
      CreateCpuRankCompute(c, l, MakeShardWeights(c, l), nullptr);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_TRUE((*r)->AllocateKvCache(kNumBlocks, kBlockSize).ok());
  return std::move(r).value();
}

inline std::unique_ptr<RankCompute> Cuda(
    const ModelConfig& c, const Layout& l, bool graphs = true,
    std::function<void(const char* op, void* stream)> after_op = {},
    bool programmatic_launch = false) {
  CudaComputeOptions o;
  o.graphs = graphs;
  o.after_op = std::move(after_op);
  o.programmatic_launch = programmatic_launch;
  o.max_step_tokens = 128;  // the prefill below (106 rows) fits; decode buckets too
  absl::StatusOr<std::unique_ptr<RankCompute>> r =
      CreateCudaRankCompute(c, l, MakeShardWeights(c, l), nullptr, o);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_EQ((*r)->backend(), "cuda");
  absl::StatusOr<int64_t> fit = (*r)->KvBlocksThatFit(kBlockSize);
  EXPECT_TRUE(fit.ok()) << fit.status();
  if (fit.ok()) {
    EXPECT_GE(*fit, kNumBlocks);
  }
  EXPECT_TRUE((*r)->AllocateKvCache(kNumBlocks, kBlockSize).ok());
  EXPECT_EQ((*r)->kv_num_blocks(), kNumBlocks);
  return std::move(r).value();
}

inline CudaComputeStats StatsOf(const RankCompute& r) {
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
inline void Advance(Batch& b, const std::vector<int>& active, const std::vector<int32_t>& next) {
  for (size_t k = 0; k < active.size(); ++k) {
    Batch::Seq& s = b.seqs[active[k]];
    s.cached += static_cast<int64_t>(s.pending.size());
    s.history.insert(s.history.end(), s.pending.begin(), s.pending.end());
    s.pending = {next[k]};
  }
}

// max|got - want| / max|want|; infinity for a size mismatch or a non-finite value.
inline double NormalisedError(const std::vector<float>& got, const std::vector<float>& want) {
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
inline Top TopOf(const float* row, int64_t vocab) {
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

inline absl::Status Logits(RankCompute& r, const std::vector<int64_t>& rows,
                           std::vector<float>* out) {
  return r.Logits(rows, out);
}

// ------------------------------- 1. CPU vs CUDA -------------------------------

}  // namespace
}  // namespace tpserve
