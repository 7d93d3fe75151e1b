#include "coordinator/inference_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tpserve {
namespace {

v1::FinishReason ToProto(Finish f) {
  switch (f) {
    case Finish::kLength: return v1::FINISH_REASON_LENGTH;
    case Finish::kStop: return v1::FINISH_REASON_STOP;
    case Finish::kEos: return v1::FINISH_REASON_EOS;
    case Finish::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case Finish::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const TokenLogprob& t, v1::TokenLogprob* m) {
  m->set_token_id(static_cast<uint32_t>(t.token));
  m->set_logprob(t.logprob);
  for (const TopLogprob& top : t.top) {
    v1::TopLogprob* p = m->add_top();
    p->set_token_id(static_cast<uint32_t>(top.token));
    p->set_logprob(top.logprob);
  }
}

absl::Status Bad(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

InferenceService::InferenceService(Cluster& cluster, ModelConfig config, std::string model_name,
                                   std::string fingerprint, const Tokenizer* tokenizer,
                                   ChatChoice chat)
    : cluster_(cluster),
      config_(std::move(config)),
      model_name_(std::move(model_name)),
      fingerprint_(std::move(fingerprint)),
      tokenizer_(tokenizer),
      chat_(std::move(chat)) {}

absl::StatusOr<std::vector<int32_t>> InferenceService::PromptIds(const v1::GenerateRequest& r) {
  // prompt_token_ids win over prompt (the API's older rule); messages go alone.
  if (r.messages_size() > 0 && (r.prompt_token_ids_size() > 0 || !r.prompt().empty())) {
    return Bad("messages", "give messages, prompt or prompt_token_ids, not several");
  }
  std::vector<int32_t> ids;
  if (r.prompt_token_ids_size() > 0) {
    for (uint32_t t : r.prompt_token_ids()) {
      if (t >= static_cast<uint32_t>(config_.vocab_size)) {
        return Bad("prompt_token_ids", absl::StrCat("token id ", t, " is outside the vocabulary [0, ",
                                                    config_.vocab_size, ")"));
      }
      ids.push_back(static_cast<int32_t>(t));
    }
    return ids;
  }
  if (r.prompt().empty() && r.messages_size() == 0) {
    return Bad("prompt", "empty: send messages, prompt or prompt_token_ids");
  }
  if (tokenizer_ == nullptr) return Bad("prompt", "this model has no tokenizer; send prompt_token_ids");
  if (!r.prompt().empty()) return tokenizer_->Encode(r.prompt(), /*add_bos=*/true);
  if (!chat_.chat_template.has_value()) {
    return Bad("messages", absl::StrCat("this model has no chat template (", chat_.reason,
                                        "); start the coordinator with --chat_template NAME or send prompt"));
  }
  std::vector<ChatMessage> messages;
  for (const v1::ChatMessage& m : r.messages()) messages.push_back({m.role(), m.content()});
  ASSIGN_OR_RETURN(std::string text, RenderChat(*chat_.chat_template, messages));
  return tokenizer_->Encode(text, /*add_bos=*/true);
}

absl::StatusOr<std::shared_ptr<Request>> InferenceService::MakeRequest(const v1::GenerateRequest& r) {
  Sequence seq;
  ASSIGN_OR_RETURN(seq.prompt, PromptIds(r));
  if (r.max_new_tokens() < 1) return Bad("max_new_tokens", "must be at least 1");
  const int64_t total = static_cast<int64_t>(seq.prompt.size()) + r.max_new_tokens();
  if (total > config_.max_position_embeddings) {
    return Bad("max_new_tokens", absl::StrCat("prompt (", seq.prompt.size(), " tokens) + max_new_tokens (",
                                              r.max_new_tokens(), ") exceed the context of ",
                                              config_.max_position_embeddings));
  }
  if (!(r.temperature() >= 0.0f)) return Bad("temperature", "must be >= 0");
  if (!(r.top_p() >= 0.0f && r.top_p() <= 1.0f)) return Bad("top_p", "must be in (0, 1] (0 = off)");
  if (!(r.min_p() >= 0.0f && r.min_p() <= 1.0f)) return Bad("min_p", "must be in [0, 1]");
  if (!(r.repetition_penalty() >= 0.0f)) return Bad("repetition_penalty", "must be > 0 (0 = off)");
  if (r.top_k() > static_cast<uint32_t>(config_.vocab_size)) return Bad("top_k", "exceeds the vocabulary");
  if (r.logprobs() > 20 || r.prompt_logprobs() > 20) return Bad("logprobs", "at most 20 alternatives");
  for (uint32_t t : r.stop_token_ids()) {
    if (t >= static_cast<uint32_t>(config_.vocab_size)) return Bad("stop_token_ids", "outside the vocabulary");
    seq.stop.stop_token_ids.push_back(static_cast<int32_t>(t));
  }
  std::vector<std::string> stop(r.stop().begin(), r.stop().end());
  for (const std::string& s : stop) {
    if (s.empty()) return Bad("stop", "empty stop string");
  }
  if (!stop.empty() && tokenizer_ == nullptr) return Bad("stop", "needs the model's tokenizer");

  seq.stop.max_new_tokens = static_cast<int32_t>(r.max_new_tokens());
  if (!r.ignore_eos()) seq.stop.eos_token_ids = config_.eos_token_ids;
  seq.sampling.temperature = r.temperature();
  seq.sampling.top_p = r.top_p() == 0.0f ? 1.0f : r.top_p();
  seq.sampling.top_k = static_cast<int32_t>(r.top_k());
  seq.sampling.min_p = r.min_p();
  seq.sampling.repetition_penalty = r.repetition_penalty() == 0.0f ? 1.0f : r.repetition_penalty();
  seq.sampling.seed = r.has_seed() ? r.seed() : std::random_device{}() * 0x9E3779B97F4A7C15ull;
  seq.logprobs = r.logprobs();
  seq.prompt_logprobs = r.prompt_logprobs();
  std::string id = r.request_id().empty() ? absl::StrCat("req-", next_id_++) : r.request_id();
  return std::make_shared<Request>(std::move(id), std::move(seq), std::move(stop), tokenizer_);
}

template <typename Sink>
grpc::Status InferenceService::Run(grpc::ServerContext* context, const v1::GenerateRequest& r,
                                   Sink&& sink) {
  absl::StatusOr<std::shared_ptr<Request>> req = MakeRequest(r);
  if (!req.ok()) return ToGrpc(req.status());
  const uint32_t prompt_tokens = static_cast<uint32_t>((*req)->seq_const().prompt.size());
  if (absl::Status s = cluster_.Submit(*req); !s.ok()) return ToGrpc(s);
  uint32_t generated = 0;
  for (bool done = false; !done;) {
    if (context->IsCancelled()) cluster_.Cancel(*req);
    for (RequestEvent& e : (*req)->Wait(100, &done)) {
      if (!e.error.ok()) return ToGrpc(e.error);
      generated += static_cast<uint32_t>(e.tokens.size());
      v1::GenerateResponse out;
      out.set_request_id((*req)->id());
      for (int32_t t : e.tokens) out.add_token_ids(static_cast<uint32_t>(t));
      out.set_text(e.text);
      for (const TokenLogprob& t : e.logprobs) ToProto(t, out.add_logprobs());
      for (const TokenLogprob& t : e.prompt_logprobs) ToProto(t, out.add_prompt_logprobs());
      out.set_finish_reason(ToProto(e.finish));
      out.set_prompt_tokens(prompt_tokens);
      out.set_generated_tokens(generated);
      if (!sink(out)) cluster_.Cancel(*req);  // the client went away
    }
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                        v1::GenerateResponse* response) {
  return Run(context, *request, [&](const v1::GenerateResponse& part) {
    // Unary: the parts add up to one answer.
    response->set_request_id(part.request_id());
    response->mutable_token_ids()->MergeFrom(part.token_ids());
    response->mutable_text()->append(part.text());
    response->mutable_logprobs()->MergeFrom(part.logprobs());
    response->mutable_prompt_logprobs()->MergeFrom(part.prompt_logprobs());
    response->set_finish_reason(part.finish_reason());
    response->set_prompt_tokens(part.prompt_tokens());
    response->set_generated_tokens(part.generated_tokens());
    return true;
  });
}

grpc::Status InferenceService::GenerateStream(grpc::ServerContext* context,
                                              const v1::GenerateRequest* request,
                                              grpc::ServerWriter<v1::GenerateResponse>* writer) {
  return Run(context, *request, [&](const v1::GenerateResponse& part) { return writer->Write(part); });
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                        v1::TokenizeResponse* response) {
  if (tokenizer_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer");
  }
  for (int32_t t : tokenizer_->Encode(request->text(), request->add_bos())) {
    response->add_token_ids(static_cast<uint32_t>(t));
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                                            v1::ModelInfo* m) {
  m->set_name(model_name_);
  m->set_architecture(config_.architecture == Architecture::kMistral ? "MistralForCausalLM"
                                                                      : "LlamaForCausalLM");
  m->set_num_layers(config_.num_layers);
  m->set_hidden_size(config_.hidden_size);
  m->set_num_heads(config_.num_heads);
  m->set_num_kv_heads(config_.num_kv_heads);
  m->set_vocab_size(config_.vocab_size);
  m->set_max_context(config_.max_position_embeddings);
  m->set_sliding_window(config_.sliding_window);
  m->set_bos_token_id(config_.bos_token_id < 0 ? 0 : config_.bos_token_id);
  for (int eos : config_.eos_token_ids) m->add_eos_token_ids(eos);
  m->set_fingerprint(fingerprint_);
  m->set_chat_template(chat_.name);
  if (chat_.chat_template.has_value()) m->set_default_system_prompt(chat_.chat_template->default_system);
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetClusterStatus(grpc::ServerContext*, const v1::GetClusterStatusRequest*,
                                                v1::ClusterStatus* out) {
  for (const ReplicaSnapshot& r : cluster_.Snapshot()) {
    v1::ReplicaStatus* s = out->add_replicas();
    s->set_name(r.info.name);
    s->set_state(r.serving ? v1::REPLICA_STATE_SERVING : v1::REPLICA_STATE_NOT_SERVING);
    s->set_tensor_parallel(r.info.tp);
    s->set_pipeline_parallel(r.info.pp);
    s->set_kv_blocks_total(r.info.kv_blocks);
    s->set_kv_blocks_free(r.kv_free);
    s->set_kv_block_size(r.info.kv_block_size);
    s->set_running_requests(r.running);
    s->set_queued_requests(r.queued);
    s->set_backend(r.info.backend);
    s->set_kv_cache_bytes(r.info.kv_cache_bytes);
    s->set_weight_bytes(r.info.weight_bytes);
  }
  out->set_queued_requests(cluster_.pending());
  return grpc::Status::OK;
}

}  // namespace tpserve
