// Generation driven from the leader without a coordinator: a fixed batch of sequences,
// prefilled together, then decoded step by step (layer: worker). Serves the worker's
// stand-alone mode, benchmarks and tests; the coordinator's scheduler replaces it in serving.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine.h"

namespace tpserve {

struct LocalRequest {
  std::vector<int32_t> prompt;
  int max_new_tokens = 16;
  SamplingParams sampling;
  int32_t stop_token = -1;  // generation ends after this token when >= 0
};

struct LocalOutput {
  std::vector<std::vector<int32_t>> tokens;  // generated tokens per request
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t decode_tokens = 0;  // tokens produced by decode steps (excludes the first token)
};

// Runs `requests` to completion on the leader's `engine`. Each sequence gets its own
// contiguous run of KV blocks; ResourceExhausted when they do not fit. `on_token(i, token)`
// is called as each token arrives. Prefill is split into chunks of at most
// `prefill_chunk` tokens per sequence and step (0 = whole prompts).
absl::StatusOr<LocalOutput> GenerateLocally(
    Engine& engine, const std::vector<LocalRequest>& requests, int prefill_chunk,
    const std::function<void(size_t, int32_t)>& on_token);

}  // namespace tpserve
