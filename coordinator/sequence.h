// A request as the scheduler sees it (layer: coordinator; plain data, guarded by the owning
// replica's lock). A sequence's known tokens are its prompt followed by what it generated;
// `computed` of them have their KV in the replica's cache.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/step.h"

namespace tpserve {

struct StopRules {
  int32_t max_new_tokens = 16;
  std::vector<int32_t> stop_token_ids;
  std::vector<int32_t> eos_token_ids;  // empty when the request ignores EOS
};

struct Sequence {
  uint64_t id = 0;
  uint64_t arrival = 0;  // admission order: earlier sequences are scheduled first, preempted last
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;
  SamplingParams sampling;
  uint32_t logprobs = 0;
  uint32_t prompt_logprobs = 0;
  int32_t prompt_logprobs_done = 0;  // prompt positions already answered (kept across preemption)
  StopRules stop;

  std::vector<int32_t> blocks;  // KV blocks held on the replica
  int32_t computed = 0;         // tokens whose KV is cached
  bool in_flight = false;       // part of a step that has not returned yet
  int32_t preemptions = 0;

  int32_t known() const { return static_cast<int32_t>(prompt.size() + generated.size()); }
  int32_t TokenAt(int32_t pos) const {
    const int32_t p = static_cast<int32_t>(prompt.size());
    return pos < p ? prompt[pos] : generated[pos - p];
  }
};

}  // namespace tpserve
