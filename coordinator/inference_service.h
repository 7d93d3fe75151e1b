// The public gRPC API (inference.proto's Inference service) over the Cluster (layer:
// coordinator). Validates every request, tokenises, and streams results; status codes map
// one to one from absl::Status. Each RPC runs on its own gRPC thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "coordinator/chat_choice.h"
#include "coordinator/cluster.h"
#include "model/config.h"
#include "model/tokenizer.h"
#include "tpserve/v1/inference.grpc.pb.h"

namespace tpserve {

class InferenceService final : public v1::Inference::Service {
 public:
  // `tokenizer` may be null (a model folder without a tokenizer): then only
  // prompt_token_ids are accepted. Without chat.chat_template, messages are refused.
  InferenceService(Cluster& cluster, ModelConfig config, std::string model_name,
                   std::string fingerprint, const Tokenizer* tokenizer, ChatChoice chat);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        v1::GenerateResponse* response) override;
  grpc::Status GenerateStream(grpc::ServerContext* context, const v1::GenerateRequest* request,
                              grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;
  grpc::Status GetClusterStatus(grpc::ServerContext* context,
                                const v1::GetClusterStatusRequest* request,
                                v1::ClusterStatus* response) override;

 private:
  // Checks and converts a request; InvalidArgument naming the field.
  absl::StatusOr<std::shared_ptr<Request>> MakeRequest(const v1::GenerateRequest& request);
  // The prompt ids of `request`: prompt_token_ids, or the tokens of prompt or of messages
  // rendered with the chat template.
  absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& request);
  // Submits and forwards events to `sink` until the request ends or the client goes away.
  template <typename Sink>
  grpc::Status Run(grpc::ServerContext* context, const v1::GenerateRequest& request, Sink&& sink);

  Cluster& cluster_;
  const ModelConfig config_;
  const std::string model_name_;
  const std::string fingerprint_;
  const Tokenizer* tokenizer_;
  const ChatChoice chat_;
  std::atomic<uint64_t> next_id_{1};
};

// absl::Status -> grpc::Status with the same code and message.
grpc::Status ToGrpc(const absl::Status& status);

}  // namespace tpserve
