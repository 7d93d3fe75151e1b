// The only file of the C++ SDK that knows gRPC and the generated types: it builds requests,
// reads responses into the plain structs of client.h and maps grpc::Status to absl::Status.
#include "clients/cpp/client.h"

#include <chrono>
#include <limits>
#include <utility>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "tpserve/v1/inference.grpc.pb.h"

namespace tpserve::client {
namespace {

namespace pb = ::tpserve::v1;
namespace health_pb = ::grpc::health::v1;

// Same code, same message: the coordinator's codes are absl's, carried one to one by gRPC.
absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

FinishReason FromProto(pb::FinishReason reason) {
  switch (reason) {
    case pb::FINISH_REASON_LENGTH:
      return FinishReason::kLength;
    case pb::FINISH_REASON_STOP:
      return FinishReason::kStop;
    case pb::FINISH_REASON_EOS:
      return FinishReason::kEos;
    case pb::FINISH_REASON_CANCELLED:
      return FinishReason::kCancelled;
    default:
      return FinishReason::kUnspecified;
  }
}

template <typename Repeated>
std::vector<uint32_t> Ids(const Repeated& ids) {
  return std::vector<uint32_t>(ids.begin(), ids.end());
}

template <typename Repeated>
std::vector<TokenLogprob> Logprobs(const Repeated& items) {
  std::vector<TokenLogprob> out;
  out.reserve(items.size());
  for (const pb::TokenLogprob& item : items) {
    TokenLogprob lp{item.token_id(), item.logprob(), {}};
    lp.top.reserve(item.top_size());
    for (const pb::TopLogprob& top : item.top()) lp.top.push_back({top.token_id(), top.logprob()});
    out.push_back(std::move(lp));
  }
  return out;
}

pb::GenerateRequest ToProto(const GenerateOptions& o) {
  pb::GenerateRequest r;
  r.set_request_id(o.request_id);
  r.set_prompt(o.prompt);
  r.mutable_prompt_token_ids()->Add(o.prompt_token_ids.begin(), o.prompt_token_ids.end());
  for (const ChatMessage& m : o.messages) {
    v1::ChatMessage* out = r.add_messages();
    out->set_role(m.role);
    out->set_content(m.content);
  }
  r.set_max_new_tokens(o.max_new_tokens);
  r.set_temperature(o.temperature);
  r.set_top_p(o.top_p);
  r.set_top_k(o.top_k);
  r.set_min_p(o.min_p);
  r.set_repetition_penalty(o.repetition_penalty);
  if (o.seed.has_value()) r.set_seed(*o.seed);
  for (const std::string& s : o.stop) r.add_stop(s);
  r.mutable_stop_token_ids()->Add(o.stop_token_ids.begin(), o.stop_token_ids.end());
  r.set_ignore_eos(o.ignore_eos);
  r.set_logprobs(o.logprobs);
  r.set_prompt_logprobs(o.prompt_logprobs);
  return r;
}

// GenerateResult and StreamChunk carry the same fields with different meanings (all tokens vs
// the new ones), so one reader fills either.
template <typename Out>
Out FromProto(const pb::GenerateResponse& r) {
  Out out;
  out.request_id = r.request_id();
  out.token_ids = Ids(r.token_ids());
  out.text = r.text();
  out.logprobs = Logprobs(r.logprobs());
  out.prompt_logprobs = Logprobs(r.prompt_logprobs());
  out.finish_reason = FromProto(r.finish_reason());
  out.prompt_tokens = r.prompt_tokens();
  out.generated_tokens = r.generated_tokens();
  return out;
}

std::string ReplicaStateName(pb::ReplicaState state) {
  switch (state) {
    case pb::REPLICA_STATE_SERVING:
      return "SERVING";
    case pb::REPLICA_STATE_NOT_SERVING:
      return "NOT_SERVING";
    default:
      return "UNSPECIFIED";
  }
}

std::string ServingStatusName(health_pb::HealthCheckResponse::ServingStatus status) {
  switch (status) {
    case health_pb::HealthCheckResponse::SERVING:
      return "SERVING";
    case health_pb::HealthCheckResponse::NOT_SERVING:
      return "NOT_SERVING";
    case health_pb::HealthCheckResponse::SERVICE_UNKNOWN:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kUnspecified:
      break;
  }
  return "";
}

struct Client::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Inference::Stub> inference;
  std::unique_ptr<health_pb::Health::Stub> health;
  int64_t timeout_ms = 0;

  // A fresh context per call (gRPC contexts are single-use); the deadline is the call's own
  // or the client's default.
  void SetDeadline(grpc::ClientContext& context, int64_t call_timeout_ms) const {
    const int64_t ms = call_timeout_ms > 0 ? call_timeout_ms : timeout_ms;
    if (ms > 0) context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address, int64_t timeout_ms) {
  if (address.empty()) return absl::InvalidArgumentError("server address is empty");
  if (timeout_ms < 0) return absl::InvalidArgumentError("timeout_ms must be >= 0");
  grpc::ChannelArguments args;
  // Long generations with logprobs exceed gRPC's default 4 MiB per message.
  args.SetMaxReceiveMessageSize(std::numeric_limits<int>::max());
  auto impl = std::make_unique<Impl>();
  impl->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  impl->inference = pb::Inference::NewStub(impl->channel);
  impl->health = health_pb::Health::NewStub(impl->channel);
  impl->timeout_ms = timeout_ms;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

absl::StatusOr<GenerateResult> Client::Generate(const GenerateOptions& options) {
  grpc::ClientContext context;
  impl_->SetDeadline(context, options.timeout_ms);
  pb::GenerateResponse response;
  const grpc::Status status = impl_->inference->Generate(&context, ToProto(options), &response);
  if (!status.ok()) return FromGrpc(status);
  return FromProto<GenerateResult>(response);
}

absl::Status Client::Stream(const GenerateOptions& options,
                            const std::function<bool(const StreamChunk&)>& on_chunk) {
  grpc::ClientContext context;
  impl_->SetDeadline(context, options.timeout_ms);
  std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>> reader =
      impl_->inference->GenerateStream(&context, ToProto(options));
  pb::GenerateResponse response;
  while (reader->Read(&response)) {
    if (!on_chunk(FromProto<StreamChunk>(response))) {
      context.TryCancel();
      // Drain so that Finish does not wait for messages nobody will read.
      while (reader->Read(&response)) {
      }
      (void)reader->Finish();  // CANCELLED, by our own choice
      return absl::OkStatus();
    }
  }
  return FromGrpc(reader->Finish());
}

absl::StatusOr<std::vector<uint32_t>> Client::Tokenize(const std::string& text, bool add_bos) {
  grpc::ClientContext context;
  impl_->SetDeadline(context, 0);
  pb::TokenizeRequest request;
  request.set_text(text);
  request.set_add_bos(add_bos);
  pb::TokenizeResponse response;
  const grpc::Status status = impl_->inference->Tokenize(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return Ids(response.token_ids());
}

absl::StatusOr<std::string> Client::Health(const std::string& service) {
  grpc::ClientContext context;
  impl_->SetDeadline(context, 0);
  health_pb::HealthCheckRequest request;
  request.set_service(service);
  health_pb::HealthCheckResponse response;
  const grpc::Status status = impl_->health->Check(&context, request, &response);
  // The health protocol answers NOT_FOUND for a service the server does not know.
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return std::string("SERVICE_UNKNOWN");
  if (!status.ok()) return FromGrpc(status);
  return ServingStatusName(response.status());
}

absl::StatusOr<ModelInfo> Client::GetModelInfo() {
  grpc::ClientContext context;
  impl_->SetDeadline(context, 0);
  pb::ModelInfo m;
  const grpc::Status status = impl_->inference->GetModelInfo(&context, pb::GetModelInfoRequest(), &m);
  if (!status.ok()) return FromGrpc(status);
  ModelInfo info;
  info.name = m.name();
  info.architecture = m.architecture();
  info.num_layers = m.num_layers();
  info.hidden_size = m.hidden_size();
  info.num_heads = m.num_heads();
  info.num_kv_heads = m.num_kv_heads();
  info.vocab_size = m.vocab_size();
  info.max_context = m.max_context();
  info.sliding_window = m.sliding_window();
  info.bos_token_id = m.bos_token_id();
  info.eos_token_ids = Ids(m.eos_token_ids());
  info.fingerprint = m.fingerprint();
  info.chat_template = m.chat_template();
  info.default_system_prompt = m.default_system_prompt();
  return info;
}

absl::StatusOr<ClusterStatus> Client::GetClusterStatus() {
  grpc::ClientContext context;
  impl_->SetDeadline(context, 0);
  pb::ClusterStatus s;
  const grpc::Status status = impl_->inference->GetClusterStatus(&context, pb::GetClusterStatusRequest(), &s);
  if (!status.ok()) return FromGrpc(status);
  ClusterStatus out;
  out.queued_requests = s.queued_requests();
  for (const pb::ReplicaStatus& r : s.replicas()) {
    ReplicaStatus replica;
    replica.name = r.name();
    replica.state = ReplicaStateName(r.state());
    replica.tensor_parallel = r.tensor_parallel();
    replica.pipeline_parallel = r.pipeline_parallel();
    replica.kv_blocks_total = r.kv_blocks_total();
    replica.kv_blocks_free = r.kv_blocks_free();
    replica.kv_block_size = r.kv_block_size();
    replica.running_requests = r.running_requests();
    replica.queued_requests = r.queued_requests();
    replica.backend = r.backend();
    replica.kv_cache_bytes = r.kv_cache_bytes();
    replica.weight_bytes = r.weight_bytes();
    out.replicas.push_back(std::move(replica));
  }
  return out;
}

}  // namespace tpserve::client
