#include "proto/codec/step_codec.h"

namespace tpserve {
namespace {

template <typename To, typename From>
std::vector<To> Copy(const From& from) {
  return std::vector<To>(from.begin(), from.end());
}

void ToProto(const TokenLogprob& t, v1::TokenLogprobMsg* m) {
  m->set_token_id(static_cast<uint32_t>(t.token));
  m->set_logprob(t.logprob);
  for (const TopLogprob& top : t.top) {
    m->add_top_ids(static_cast<uint32_t>(top.token));
    m->add_top_logprobs(top.logprob);
  }
}

TokenLogprob FromProto(const v1::TokenLogprobMsg& m) {
  TokenLogprob t;
  t.token = static_cast<int32_t>(m.token_id());
  t.logprob = m.logprob();
  for (int i = 0; i < m.top_ids_size() && i < m.top_logprobs_size(); ++i) {
    t.top.push_back({static_cast<int32_t>(m.top_ids(i)), m.top_logprobs(i)});
  }
  return t;
}

}  // namespace

void ToProto(const StepPlan& plan, v1::StepPlanMsg* msg) {
  msg->set_step_id(plan.step_id);
  for (const SeqWork& s : plan.seqs) {
    v1::SeqWorkMsg* m = msg->add_seqs();
    m->set_seq_id(s.seq_id);
    m->set_start_pos(static_cast<uint32_t>(s.start_pos));
    for (int32_t t : s.tokens) m->add_tokens(static_cast<uint32_t>(t));
    for (int32_t b : s.block_table) m->add_block_table(static_cast<uint32_t>(b));
    m->set_sample(s.sample);
    v1::SamplingParamsMsg* p = m->mutable_sampling();
    p->set_temperature(s.sampling.temperature);
    p->set_top_p(s.sampling.top_p);
    p->set_top_k(static_cast<uint32_t>(s.sampling.top_k));
    p->set_min_p(s.sampling.min_p);
    p->set_repetition_penalty(s.sampling.repetition_penalty);
    p->set_seed(s.sampling.seed);
    m->set_logprobs(s.logprobs);
    m->set_prompt_logprobs(s.prompt_logprobs);
    m->set_next_prompt_token(s.next_prompt_token);
    for (int32_t t : s.history) m->add_history(static_cast<uint32_t>(t));
  }
}

StepPlan FromProto(const v1::StepPlanMsg& msg) {
  StepPlan plan;
  plan.step_id = msg.step_id();
  for (const v1::SeqWorkMsg& m : msg.seqs()) {
    SeqWork s;
    s.seq_id = m.seq_id();
    s.start_pos = static_cast<int32_t>(m.start_pos());
    s.tokens = Copy<int32_t>(m.tokens());
    s.block_table = Copy<int32_t>(m.block_table());
    s.sample = m.sample();
    s.sampling.temperature = m.sampling().temperature();
    s.sampling.top_p = m.sampling().top_p();
    s.sampling.top_k = static_cast<int32_t>(m.sampling().top_k());
    s.sampling.min_p = m.sampling().min_p();
    s.sampling.repetition_penalty = m.sampling().repetition_penalty();
    s.sampling.seed = m.sampling().seed();
    s.logprobs = m.logprobs();
    s.prompt_logprobs = m.prompt_logprobs();
    s.next_prompt_token = m.next_prompt_token();
    s.history = Copy<int32_t>(m.history());
    plan.seqs.push_back(std::move(s));
  }
  return plan;
}

void ToProto(const StepResult& result, v1::StepResultMsg* msg) {
  msg->set_step_id(result.step_id);
  for (const SeqResult& s : result.seqs) {
    v1::SeqResultMsg* m = msg->add_seqs();
    m->set_seq_id(s.seq_id);
    m->set_token(s.token);
    ToProto(s.sampled, m->mutable_sampled());
    for (const TokenLogprob& t : s.prompt_logprobs) ToProto(t, m->add_prompt_logprobs());
  }
}

StepResult FromProto(const v1::StepResultMsg& msg) {
  StepResult result;
  result.step_id = msg.step_id();
  for (const v1::SeqResultMsg& m : msg.seqs()) {
    SeqResult s;
    s.seq_id = m.seq_id();
    s.token = m.token();
    s.sampled = FromProto(m.sampled());
    for (const v1::TokenLogprobMsg& t : m.prompt_logprobs()) s.prompt_logprobs.push_back(FromProto(t));
    result.seqs.push_back(std::move(s));
  }
  return result;
}

}  // namespace tpserve
