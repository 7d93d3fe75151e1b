// Token sampling and logprobs from one row of logits (layer: worker; pure functions,
// thread-safe). The random draw is counter-based: Philox4x32-10 keyed by the request's seed
// with the token's position as counter, so the same seed and logits give the same token
// whatever else is in the batch, and a recomputed sequence draws the same numbers again.
#pragma once

#include <cstdint>
#include <vector>

#include "common/step.h"

namespace tpserve {

// Philox4x32-10 of counter (c0, c1, 0, 0) under key (k0, k1); returns the first word mapped
// to [0, 1) with 24 bits.
float PhiloxUniform(uint64_t seed, uint64_t counter);

// Picks the next token from `logits` ([vocab], modified in place as scratch).
// Order, as Hugging Face's processors: repetition penalty over `seen` (each token once),
// then greedy if temperature == 0; else temperature, top-k, top-p (smallest set of most
// probable tokens reaching top_p; tokens tied at the cut-off are kept), min-p (prob >= min_p *
// max prob), then the inverse CDF of the kept tokens in token-id order at
// u = PhiloxUniform(seed, position). Greedy ties go to the lowest id.
int32_t SampleToken(float* logits, int64_t vocab, const SamplingParams& params,
                    const std::vector<int32_t>& seen, int64_t position);

// Log-softmax of `logits` at `token`, plus the `top_n` best tokens (best first, ties by id).
TokenLogprob ComputeLogprobs(const float* logits, int64_t vocab, int32_t token, uint32_t top_n);

}  // namespace tpserve
