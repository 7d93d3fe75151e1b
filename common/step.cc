#include "common/step.h"

#include "common/bytes.h"

namespace tpserve {
namespace {

void PutLogprob(ByteWriter& w, const TokenLogprob& t) {
  w.Put(t.token);
  w.Put(t.logprob);
  w.PutVector(t.top);
}

bool GetLogprob(ByteReader& r, TokenLogprob& t) {
  return r.Get(t.token) && r.Get(t.logprob) && r.GetVector(t.top);
}

}  // namespace

std::vector<uint8_t> SerializePlan(const StepPlan& plan) {
  ByteWriter w;
  w.Put(plan.step_id);
  w.Put<uint8_t>(plan.shutdown);
  w.Put<uint64_t>(plan.seqs.size());
  for (const SeqWork& s : plan.seqs) {
    w.Put(s.seq_id);
    w.Put(s.start_pos);
    w.PutVector(s.tokens);
    w.PutVector(s.block_table);
    w.Put<uint8_t>(s.sample);
    w.Put(s.sampling);
    w.Put(s.logprobs);
    w.Put(s.prompt_logprobs);
    w.Put(s.next_prompt_token);
    w.PutVector(s.history);
    w.Put<uint8_t>(s.return_logits);
  }
  return std::move(w.bytes());
}

absl::StatusOr<StepPlan> ParsePlan(const std::vector<uint8_t>& bytes) {
  ByteReader r(bytes.data(), bytes.size());
  StepPlan plan;
  uint8_t shutdown = 0;
  uint64_t n = 0;
  r.Get(plan.step_id);
  r.Get(shutdown);
  r.Get(n);
  plan.shutdown = shutdown != 0;
  if (!r.ok() || n > bytes.size()) return absl::InvalidArgumentError("step plan is truncated");
  plan.seqs.resize(n);
  for (SeqWork& s : plan.seqs) {
    uint8_t sample = 0, ret = 0;
    if (!(r.Get(s.seq_id) && r.Get(s.start_pos) && r.GetVector(s.tokens) &&
          r.GetVector(s.block_table) && r.Get(sample) && r.Get(s.sampling) && r.Get(s.logprobs) &&
          r.Get(s.prompt_logprobs) && r.Get(s.next_prompt_token) && r.GetVector(s.history) &&
          r.Get(ret))) {
      return absl::InvalidArgumentError("step plan is truncated");
    }
    s.sample = sample != 0;
    s.return_logits = ret != 0;
  }
  if (!r.AtEnd()) return absl::InvalidArgumentError("step plan has trailing bytes");
  return plan;
}

std::vector<uint8_t> SerializeResult(const StepResult& result) {
  ByteWriter w;
  w.Put(result.step_id);
  w.Put<uint64_t>(result.seqs.size());
  for (const SeqResult& s : result.seqs) {
    w.Put(s.seq_id);
    w.Put(s.token);
    PutLogprob(w, s.sampled);
    w.Put<uint64_t>(s.prompt_logprobs.size());
    for (const TokenLogprob& t : s.prompt_logprobs) PutLogprob(w, t);
    w.PutVector(s.logits);
  }
  return std::move(w.bytes());
}

absl::StatusOr<StepResult> ParseResult(const std::vector<uint8_t>& bytes) {
  ByteReader r(bytes.data(), bytes.size());
  StepResult result;
  uint64_t n = 0;
  r.Get(result.step_id);
  r.Get(n);
  if (!r.ok() || n > bytes.size()) return absl::InvalidArgumentError("step result is truncated");
  result.seqs.resize(n);
  for (SeqResult& s : result.seqs) {
    uint64_t np = 0;
    if (!(r.Get(s.seq_id) && r.Get(s.token) && GetLogprob(r, s.sampled) && r.Get(np)) ||
        np > bytes.size()) {
      return absl::InvalidArgumentError("step result is truncated");
    }
    s.prompt_logprobs.resize(np);
    for (TokenLogprob& t : s.prompt_logprobs) {
      if (!GetLogprob(r, t)) return absl::InvalidArgumentError("step result is truncated");
    }
    if (!r.GetVector(s.logits)) return absl::InvalidArgumentError("step result is truncated");
  }
  if (!r.AtEnd()) return absl::InvalidArgumentError("step result has trailing bytes");
  return result;
}

}  // namespace tpserve
