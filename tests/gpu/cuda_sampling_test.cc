// Backend-ops cases of cuda::SampleTokens (kernels/cuda/sampling.cu) against the CPU sampler
// (worker/sampler.cc: SampleToken and ComputeLogprobs), part of cuda_ops_test.
//  - CudaHostChecks.* (no GPU needed): SamplingPhiloxUniform, the formula the kernel draws with,
//    equals the CPU sampler's PhiloxUniform bit for bit; bad arguments are InvalidArgument.
//  - SampleTokensMatchesCpuSampler/* (GPU): a table of cases, each many seeded random rows
//    with per-row parameters exercising one option alone (greedy, temperature, top-k, top-p,
//    min-p, repetition penalty) or all combined, NaN / inf rows, and top-N logprobs.
//    Tolerances: tokens and top ids exact; logprobs within 1e-5 absolute; NaN parity. Every
//    output sits between guard zones and starts as an "unwritten" NaN sentinel.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/step.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "tests/gpu/cuda_test_util.h"
#include "worker/sampler.h"

namespace tpserve::kernels::cuda {
namespace gpu_test {
size_t SampleTokensCaseCount();
}  // namespace gpu_test
namespace {

using namespace gpu_test;  // NOLINT: the shared test helpers

constexpr double kLogprobTol = 1e-5;

// ============================== host-side checks ==============================

TEST(CudaHostChecks, SamplingPhiloxUniformEqualsTheCpuSamplersBitForBit) {
  std::mt19937_64 rng(12345);
  std::vector<uint64_t> seeds = {0, 1, 42, 0xffffffffu, uint64_t{1} << 32,
                                 std::numeric_limits<uint64_t>::max()};
  for (int i = 0; i < 200; ++i) seeds.push_back(rng());
  std::vector<uint64_t> counters = {0, 1, 2, 4095, 0xffffffffu, uint64_t{1} << 32,
                                    std::numeric_limits<uint64_t>::max()};
  for (int i = 0; i < 50; ++i) counters.push_back(rng() >> (i % 64));
  size_t distinct_checks = 0;
  for (uint64_t seed : seeds) {
    for (uint64_t counter : counters) {
      const float want = PhiloxUniform(seed, counter);
      const float got = SamplingPhiloxUniform(seed, counter);
      ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
          << "seed " << seed << " counter " << counter;
      ASSERT_GE(got, 0.0f);
      ASSERT_LT(got, 1.0f);
      ++distinct_checks;
    }
  }
  // The check is not vacuous: the draws vary with seed and counter.
  EXPECT_NE(SamplingPhiloxUniform(1, 0), SamplingPhiloxUniform(2, 0));
  EXPECT_NE(SamplingPhiloxUniform(1, 0), SamplingPhiloxUniform(1, 1));
  EXPECT_EQ(distinct_checks, seeds.size() * counters.size());
}

TEST(CudaHostChecks, SampleTokensRefusesBadArgumentsAndZeroRowsIsANoOp) {
  constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
  auto* f = reinterpret_cast<float*>(uintptr_t{256});
  auto* i32 = reinterpret_cast<int32_t*>(uintptr_t{256});
  auto* row = reinterpret_cast<SamplingRow*>(uintptr_t{256});
  SampleTokensParams p;
  p.logits = f;
  p.rows = 1;
  p.vocab = 8;
  p.params = row;
  p.workspace = f;
  p.tokens = i32;
  p.top_n = kMaxSampleTopLogprobs + 1;
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.top_n = 1;  // top_ids and top_logprobs are null
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.top_n = -1;
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.top_n = 0;
  p.vocab = 0;
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.vocab = int64_t{1} << 31;
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.vocab = 8;
  p.num_seen = 3;  // seen lists are null
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.num_seen = -1;
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.num_seen = 0;
  p.workspace = nullptr;
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.workspace = f;
  p.rows = -1;
  EXPECT_EQ(SampleTokens(p, Stream{}).code(), kInvalid);
  p.rows = 0;
  p.logits = nullptr;
  EXPECT_TRUE(SampleTokens(p, Stream{}).ok());
}

// ============================== GPU cases ==============================

enum class Mode { kGreedy, kTemperature, kTopK, kTopP, kMinP, kPenalty, kCombined, kNan };
struct SampleCase {
  std::string name;
  int64_t rows, vocab;
  Mode mode;
  int64_t top_n;
};
void PrintTo(const SampleCase& c, std::ostream* os) { *os << c.name; }
const std::vector<SampleCase>& SampleCases() {
  static const std::vector<SampleCase> cases = {
      {"greedy_equals_argmax_with_ties", 64, 1000, Mode::kGreedy, 5},
      {"temperature_alone", 200, 1000, Mode::kTemperature, 0},
      {"top_k_alone", 200, 1000, Mode::kTopK, 3},
      {"top_p_alone", 200, 1000, Mode::kTopP, 0},
      {"min_p_alone", 200, 1000, Mode::kMinP, 0},
      {"repetition_penalty_alone", 200, 1000, Mode::kPenalty, 2},
      {"all_combined", 200, 1000, Mode::kCombined, 20},
      {"all_combined_vocab32000", 32, 32000, Mode::kCombined, 20},
      {"all_combined_vocab128256", 6, 128256, Mode::kCombined, 8},
      {"tiny_vocab3_topn20", 50, 3, Mode::kCombined, 20},
      {"nan_and_inf_rows", 40, 777, Mode::kNan, 4},
  };
  return cases;
}
using SampleTokensMatchesCpuSampler = GpuCase<SampleCase>;

SamplingRow RandomRow(Mode mode, std::mt19937& rng, int64_t vocab) {
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  SamplingRow r;
  r.seed = (static_cast<uint64_t>(rng()) << 32) | rng();
  r.position = static_cast<int64_t>(rng() % 100000);
  r.temperature = 1.0f;
  switch (mode) {
    case Mode::kGreedy:
      r.temperature = 0.0f;
      if (rng() % 4 == 0) {  // the other greedy spelling
        r.temperature = 0.7f;
        r.top_k = 1;
      }
      break;
    case Mode::kTemperature:
      r.temperature = 0.2f + 2.0f * unit(rng);
      break;
    case Mode::kTopK:
      r.top_k = static_cast<int32_t>(rng() % 4 == 0 ? vocab + rng() % 3 : 2 + rng() % 100);
      break;
    case Mode::kTopP:
      r.top_p = 0.05f + 0.94f * unit(rng);
      break;
    case Mode::kMinP:
      r.min_p = 0.01f + 0.5f * unit(rng);
      break;
    case Mode::kPenalty:
      r.repetition_penalty = rng() % 3 == 0 ? 0.8f : 1.1f + unit(rng);
      break;
    case Mode::kCombined:
    case Mode::kNan:
      r.temperature = rng() % 8 == 0 ? 0.0f : 0.3f + 1.5f * unit(rng);
      r.top_k = rng() % 2 ? static_cast<int32_t>(rng() % 60) : 0;
      r.top_p = rng() % 2 ? 0.1f + 0.89f * unit(rng) : 1.0f;
      r.min_p = rng() % 2 ? 0.2f * unit(rng) : 0.0f;
      r.repetition_penalty = rng() % 2 ? 1.0f + unit(rng) : 1.0f;
      break;
  }
  return r;
}

TEST_P(SampleTokensMatchesCpuSampler, SameTokensAndLogprobsWithGuards) {
  const SampleCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  const float scale = c.mode == Mode::kPenalty ? 3.0f : 6.0f;
  std::vector<float> logits = RandomFloats(static_cast<size_t>(c.rows * c.vocab), rng, scale);
  std::vector<SamplingRow> rows(c.rows);
  std::vector<int32_t> offsets = {0}, seen_ids;
  std::vector<std::vector<int32_t>> seen(c.rows);
  for (int64_t r = 0; r < c.rows; ++r) {
    rows[r] = RandomRow(c.mode, rng, c.vocab);
    float* row = logits.data() + r * c.vocab;
    if (c.mode == Mode::kGreedy && r % 2 == 0 && c.vocab > 2) {
      // A tie for the maximum: the lower id must win.
      int64_t best = 0;
      for (int64_t i = 1; i < c.vocab; ++i) best = row[i] > row[best] ? i : best;
      row[(best + 1 + rng() % (c.vocab - 1)) % c.vocab] = row[best];
    }
    if (c.mode == Mode::kNan) {
      const int64_t at = static_cast<int64_t>(rng() % c.vocab);
      switch (r % 5) {
        case 0: for (int64_t i = 0; i < c.vocab; ++i) row[i] = NAN; break;  // all NaN
        case 1: row[0] = NAN; break;                                       // NaN first
        case 2: row[at] = NAN; break;                                      // NaN inside
        case 3: row[at] = INFINITY; break;                                 // +inf inside
        default: break;                                                    // clean row
      }
    }
    if (rows[r].repetition_penalty != 1.0f) {
      const int n = static_cast<int>(rng() % 40);
      for (int j = 0; j < n; ++j) {
        int32_t t = static_cast<int32_t>(rng() % c.vocab);
        if (j % 13 == 5) t = static_cast<int32_t>(c.vocab + rng() % 5);  // out of range
        if (j % 17 == 7) t = -1;                                          // out of range
        seen[r].push_back(t);
        if (j % 7 == 3) seen[r].push_back(t);  // a duplicate: penalised once
      }
    }
    seen_ids.insert(seen_ids.end(), seen[r].begin(), seen[r].end());
    offsets.push_back(static_cast<int32_t>(seen_ids.size()));
  }

  // The CPU sampler, row by row.
  std::vector<int32_t> want_tokens(c.rows);
  std::vector<TokenLogprob> want_lp(c.rows);
  for (int64_t r = 0; r < c.rows; ++r) {
    const std::vector<float> raw(logits.begin() + r * c.vocab,
                                 logits.begin() + (r + 1) * c.vocab);
    std::vector<float> scratch = raw;
    SamplingParams sp;
    sp.temperature = rows[r].temperature;
    sp.top_p = rows[r].top_p;
    sp.top_k = rows[r].top_k;
    sp.min_p = rows[r].min_p;
    sp.repetition_penalty = rows[r].repetition_penalty;
    sp.seed = rows[r].seed;
    want_tokens[r] = SampleToken(scratch.data(), c.vocab, sp, seen[r], rows[r].position);
    want_lp[r] = ComputeLogprobs(raw.data(), c.vocab, want_tokens[r],
                                 static_cast<uint32_t>(c.top_n));
    if (c.mode == Mode::kGreedy) {
      int64_t best = 0;
      for (int64_t i = 1; i < c.vocab; ++i) best = raw[i] > raw[best] ? i : best;
      ASSERT_EQ(want_tokens[r], best) << "the CPU sampler's greedy is not the first argmax";
    }
  }

  if (seen_ids.empty()) seen_ids.push_back(0);  // a non-empty upload; num_seen says 0
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_logits, Upload(logits));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_rows, Upload(rows));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_offsets, Upload(offsets));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_seen, Upload(seen_ids));
  const size_t top = static_cast<size_t>(c.rows * std::max<int64_t>(c.top_n, 1));
  ASSERT_OK_AND_ASSIGN(auto workspace, GuardedDevice<float>::Unwritten(logits.size()));
  // int32 outputs travel in float-typed guarded buffers (same size; compared by bits).
  ASSERT_OK_AND_ASSIGN(auto tokens, GuardedDevice<float>::Unwritten(c.rows));
  ASSERT_OK_AND_ASSIGN(auto token_lp, GuardedDevice<float>::Unwritten(c.rows));
  ASSERT_OK_AND_ASSIGN(auto top_ids, GuardedDevice<float>::Unwritten(top));
  ASSERT_OK_AND_ASSIGN(auto top_lp, GuardedDevice<float>::Unwritten(top));

  SampleTokensParams p;
  p.logits = d_logits.as<float>();
  p.rows = c.rows;
  p.vocab = c.vocab;
  p.params = d_rows.as<SamplingRow>();
  p.seen_offsets = d_offsets.as<int32_t>();
  p.seen_ids = d_seen.as<int32_t>();
  p.num_seen = offsets.back();
  p.workspace = workspace.data();
  p.tokens = reinterpret_cast<int32_t*>(tokens.data());
  p.token_logprobs = token_lp.data();
  p.top_n = c.top_n;
  p.top_ids = reinterpret_cast<int32_t*>(top_ids.data());
  p.top_logprobs = top_lp.data();
  ASSERT_OK(SampleTokens(p, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));

  ASSERT_OK_AND_ASSIGN(std::vector<float> got_tokens, tokens.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<float> got_lp, token_lp.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<float> got_top_ids, top_ids.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<float> got_top_lp, top_lp.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<float> unused, workspace.Download());
  EXPECT_TRUE(tokens.GuardsIntact()) << "tokens";
  EXPECT_TRUE(token_lp.GuardsIntact()) << "token_logprobs";
  EXPECT_TRUE(top_ids.GuardsIntact()) << "top_ids";
  EXPECT_TRUE(top_lp.GuardsIntact()) << "top_logprobs";
  EXPECT_TRUE(workspace.GuardsIntact()) << "workspace";

  auto near = [](float got, float want) {
    if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
    if (std::isinf(want) || std::isinf(got)) return got == want;
    return std::fabs(static_cast<double>(got) - want) <= kLogprobTol;
  };
  int distinct = 0;
  for (int64_t r = 0; r < c.rows; ++r) {
    const int32_t token = std::bit_cast<int32_t>(got_tokens[r]);
    EXPECT_EQ(token, want_tokens[r]) << "row " << r;
    distinct += token != want_tokens[0];
    EXPECT_TRUE(near(got_lp[r], want_lp[r].logprob))
        << "row " << r << ": logprob " << got_lp[r] << ", want " << want_lp[r].logprob;
    const bool nan_row = std::isnan(want_lp[r].logprob);
    for (int64_t n = 0; n < c.top_n; ++n) {
      const int32_t id = std::bit_cast<int32_t>(got_top_ids[r * c.top_n + n]);
      const float lp = got_top_lp[r * c.top_n + n];
      if (n >= c.vocab) {
        EXPECT_EQ(id, -1) << "row " << r << " slot " << n;
        EXPECT_EQ(lp, -INFINITY) << "row " << r << " slot " << n;
        continue;
      }
      if (nan_row) {  // the CPU's order of NaN ties is unspecified: ids in range, NaN values
        EXPECT_TRUE(id >= 0 && id < c.vocab) << "row " << r << " slot " << n;
        EXPECT_TRUE(std::isnan(lp)) << "row " << r << " slot " << n;
        continue;
      }
      EXPECT_EQ(id, want_lp[r].top[n].token) << "row " << r << " slot " << n;
      EXPECT_TRUE(near(lp, want_lp[r].top[n].logprob))
          << "row " << r << " slot " << n << ": " << lp << ", want " << want_lp[r].top[n].logprob;
    }
  }
  if (c.rows > 8 && c.mode != Mode::kNan) {
    EXPECT_GT(distinct, 0) << "every row drew one token";
  }
}
INSTANTIATE_TEST_SUITE_P(CudaOps, SampleTokensMatchesCpuSampler, ::testing::ValuesIn(SampleCases()),
                         NameOf<SampleCase>);

}  // namespace

size_t gpu_test::SampleTokensCaseCount() { return SampleCases().size(); }

}  // namespace tpserve::kernels::cuda
