// TimeSteps (step_timing.h): builds one step's rows as the Engine does (worker/engine.cc's
// flattening: sequences back to back, slots from each sequence's block table) and times it.
#include "bench/gpu/step_timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace tpserve::bench::gpu {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

absl::Status Prefixed(const absl::Status& s, const StepShape& shape, const char* call) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(Describe(shape), ": ", call, ": ", s.message()));
}

}  // namespace

std::string Describe(const StepShape& s) {
  if (s.decode()) return absl::StrCat("decode batch ", s.num_seqs, " at position ", s.start_pos);
  return absl::StrCat("prefill ", s.new_tokens, " tokens x ", s.num_seqs, " sequence",
                      s.num_seqs == 1 ? "" : "s", s.start_pos > 0 ? " after " : "",
                      s.start_pos > 0 ? absl::StrCat(s.start_pos) : "");
}

absl::StatusOr<StepTiming> TimeSteps(RankCompute& compute, const StepShape& shape,
                                     int64_t vocab, int64_t block_size,
                                     std::span<const int32_t> blocks, int warmup, int reps) {
  if (shape.num_seqs < 1 || shape.new_tokens < 1 || shape.start_pos < 0 || vocab < 1 ||
      block_size < 1 || warmup < 0 || reps < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step of ", shape.num_seqs, " sequences x ", shape.new_tokens, " tokens at ",
        shape.start_pos, ", vocab ", vocab, ", block size ", block_size, ", ", warmup,
        " warm-up and ", reps, " timed steps"));
  }
  const int64_t per_seq = shape.blocks(block_size) / shape.num_seqs;
  if (static_cast<int64_t>(blocks.size()) < shape.blocks(block_size)) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(shape), " needs ",
                                                   shape.blocks(block_size), " KV blocks, ",
                                                   blocks.size(), " given"));
  }
  const int64_t tokens = shape.tokens();
  std::vector<int32_t> ids(tokens), positions(tokens);
  std::vector<int64_t> slots(tokens);
  std::vector<kernels::AttentionSeq> seqs(shape.num_seqs);
  std::vector<SampleRow> sample(shape.num_seqs);
  std::vector<int64_t> last_rows(shape.num_seqs);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  for (int64_t s = 0; s < shape.num_seqs; ++s) {
    const int32_t* table = blocks.data() + s * per_seq;
    seqs[s] = {s * shape.new_tokens, shape.new_tokens, shape.start_pos, table, per_seq};
    for (int64_t k = 0; k < shape.new_tokens; ++k) {
      const int64_t row = s * shape.new_tokens + k, pos = shape.start_pos + k;
      ids[row] = token(rng);
      positions[row] = static_cast<int32_t>(pos);
      slots[row] = int64_t{table[pos / block_size]} * block_size + pos % block_size;
    }
    last_rows[s] = (s + 1) * shape.new_tokens - 1;
    sample[s].row = last_rows[s];
    sample[s].position = shape.context();  // the position of the token being sampled
  }
  StepRows rows;
  rows.token_ids = ids;
  rows.positions = positions;
  rows.slots = slots;
  rows.seqs = seqs;
  rows.max_context = shape.context();
  rows.decode = shape.decode();

  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0, Clock::time_point t1) {
    return std::chrono::duration<double, std::milli>(t1 - t0).count();
  };
  StepTiming out;
  out.reps = reps;
  std::vector<double> step_ms, sample_ms;
  std::vector<SampledToken> sampled;
  for (int i = 0; i < warmup + reps; ++i) {
    const Clock::time_point t0 = Clock::now();
    if (absl::Status s = compute.Forward(rows, nullptr, nullptr); !s.ok()) {
      return Prefixed(s, shape, "Forward");
    }
    const Clock::time_point t1 = Clock::now();
    if (absl::Status s = compute.Sample(sample, &sampled); !s.ok()) {
      return Prefixed(s, shape, "Sample");
    }
    const Clock::time_point t2 = Clock::now();
    if (i >= warmup) {
      step_ms.push_back(ms_since(t0, t2));
      sample_ms.push_back(ms_since(t1, t2));
    }
  }
  out.step_ms = Median(step_ms);
  out.sample_ms = Median(sample_ms);
  out.min_ms = *std::min_element(step_ms.begin(), step_ms.end());
  out.max_ms = *std::max_element(step_ms.begin(), step_ms.end());
  for (const SampledToken& t : sampled) {
    if (t.token < 0 || t.token >= vocab) {
      return absl::InternalError(absl::StrCat(Describe(shape), ": sampled token ", t.token,
                                              " outside the vocabulary of ", vocab));
    }
    out.tokens.push_back(t.token);
  }
  if (static_cast<int64_t>(out.tokens.size()) != shape.num_seqs) {
    return absl::InternalError(absl::StrCat(Describe(shape), ": ", out.tokens.size(),
                                            " tokens sampled for ", shape.num_seqs, " rows"));
  }
  std::vector<float> logits;
  if (absl::Status s = compute.Logits(last_rows, &logits); !s.ok()) {
    return Prefixed(s, shape, "Logits");
  }
  const auto bad = std::count_if(logits.begin(), logits.end(),
                                 [](float f) { return !std::isfinite(f); });
  if (bad > 0 || static_cast<int64_t>(logits.size()) != shape.num_seqs * vocab) {
    return absl::InternalError(absl::StrCat(Describe(shape), ": ", bad, " of ", logits.size(),
                                            " logits are not finite (", shape.num_seqs * vocab,
                                            " expected)"));
  }
  return out;
}

}  // namespace tpserve::bench::gpu
