// One engine step: what the coordinator asks of a replica and what comes back (layer: common,
// plain data). The coordinator decides everything (which sequences run, which KV blocks they
// own); the worker executes. Plans travel between ranks as bytes (Serialize/Parse).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve {

struct SamplingParams {
  float temperature = 0.0f;        // 0 = greedy
  float top_p = 1.0f;              // (0, 1]
  int32_t top_k = 0;               // 0 = off
  float min_p = 0.0f;              // [0, 1]
  float repetition_penalty = 1.0f; // HF semantics: > 1 discourages tokens seen before
  uint64_t seed = 0;
};

// One sequence's share of a step: new tokens at positions [start_pos, start_pos + size).
struct SeqWork {
  uint64_t seq_id = 0;
  int32_t start_pos = 0;
  std::vector<int32_t> tokens;       // new token ids (a prefill chunk or one decode token)
  std::vector<int32_t> block_table;  // KV blocks covering positions [0, start_pos + size)
  bool sample = false;               // sample the token after the last one
  SamplingParams sampling;
  uint32_t logprobs = 0;             // top-N logprobs for the sampled token
  uint32_t prompt_logprobs = 0;      // top-N logprobs for each token of this chunk after pos 0
  int32_t next_prompt_token = -1;    // token at start_pos + size when it is still prompt
  std::vector<int32_t> history;      // tokens at [0, start_pos), only for repetition_penalty
  bool return_logits = false;        // return raw logits of every row (tests and tools)
};

struct StepPlan {
  uint64_t step_id = 0;
  bool shutdown = false;  // tells every rank to leave its serve loop
  std::vector<SeqWork> seqs;
};

struct TopLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// Log-softmax of the model's raw logits (before penalties and temperature).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<TopLogprob> top;  // best first
};

struct SeqResult {
  uint64_t seq_id = 0;
  int32_t token = -1;                        // sampled token, -1 when not sampled
  TokenLogprob sampled;                      // when sample and logprobs > 0 (top filled)
  std::vector<TokenLogprob> prompt_logprobs; // entry k: token at start_pos + k + 1
  std::vector<float> logits;                 // [size, vocab] when return_logits
};

struct StepResult {
  uint64_t step_id = 0;
  std::vector<SeqResult> seqs;  // same order as the plan
};

std::vector<uint8_t> SerializePlan(const StepPlan& plan);
// InvalidArgument when the bytes are not a whole plan.
absl::StatusOr<StepPlan> ParsePlan(const std::vector<uint8_t>& bytes);
std::vector<uint8_t> SerializeResult(const StepResult& result);
absl::StatusOr<StepResult> ParseResult(const std::vector<uint8_t>& bytes);

}  // namespace tpserve
