#include "worker/local_generate.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tpserve {

absl::StatusOr<LocalOutput> GenerateLocally(
    Engine& engine, const std::vector<LocalRequest>& requests, int prefill_chunk,
    const std::function<void(size_t, int32_t)>& on_token) {
  const int64_t bs = engine.kv_block_size();
  std::vector<std::vector<int32_t>> tables(requests.size());
  int64_t next_block = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const int64_t len = static_cast<int64_t>(requests[i].prompt.size()) + requests[i].max_new_tokens;
    const int64_t blocks = (len + bs - 1) / bs;
    if (next_block + blocks > engine.kv_num_blocks()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "requests need more than the ", engine.kv_num_blocks(), " KV blocks of ", bs, " tokens"));
    }
    for (int64_t b = 0; b < blocks; ++b) tables[i].push_back(static_cast<int32_t>(next_block++));
  }

  LocalOutput out;
  out.tokens.resize(requests.size());
  std::vector<int32_t> done_prompt(requests.size(), 0);
  std::vector<bool> finished(requests.size(), false);
  using Clock = std::chrono::steady_clock;
  uint64_t step_id = 0;
  bool prefilling = true;
  for (;;) {
    StepPlan plan;
    plan.step_id = step_id++;
    std::vector<size_t> owners;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (finished[i]) continue;
      const LocalRequest& r = requests[i];
      SeqWork s;
      s.seq_id = i;
      s.block_table = tables[i];
      s.sampling = r.sampling;
      const int32_t plen = static_cast<int32_t>(r.prompt.size());
      if (done_prompt[i] < plen) {
        const int32_t n = prefill_chunk > 0 ? std::min(prefill_chunk, plen - done_prompt[i])
                                            : plen - done_prompt[i];
        s.start_pos = done_prompt[i];
        s.tokens.assign(r.prompt.begin() + done_prompt[i], r.prompt.begin() + done_prompt[i] + n);
        done_prompt[i] += n;
        s.sample = done_prompt[i] == plen;
      } else {
        s.start_pos = plen + static_cast<int32_t>(out.tokens[i].size()) - 1;
        s.tokens = {out.tokens[i].back()};
        s.sample = true;
      }
      if (r.sampling.repetition_penalty != 1.0f) {
        s.history.assign(r.prompt.begin(), r.prompt.begin() + std::min(s.start_pos, plen));
        for (int32_t p = plen; p < s.start_pos; ++p) s.history.push_back(out.tokens[i][p - plen]);
      }
      plan.seqs.push_back(std::move(s));
      owners.push_back(i);
    }
    if (plan.seqs.empty()) break;
    const bool decode_step = !prefilling;
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(StepResult result, engine.Step(plan));
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    (decode_step ? out.decode_seconds : out.prefill_seconds) += dt;
    prefilling = false;
    for (size_t k = 0; k < owners.size(); ++k) {
      const size_t i = owners[k];
      if (done_prompt[i] < static_cast<int32_t>(requests[i].prompt.size())) prefilling = true;
      const int32_t token = result.seqs[k].token;
      if (token < 0) continue;
      out.tokens[i].push_back(token);
      if (decode_step) ++out.decode_tokens;
      if (on_token) on_token(i, token);
      if (static_cast<int>(out.tokens[i].size()) >= requests[i].max_new_tokens ||
          token == requests[i].stop_token) {
        finished[i] = true;
      }
    }
  }
  return out;
}

}  // namespace tpserve
