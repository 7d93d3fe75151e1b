// tpserve-coordinator: the public gRPC API (Inference, grpc.health.v1.Health, reflection) on
// --listen and the worker link on --worker_listen, over one model folder.
#include <csignal>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "coordinator/chat_choice.h"
#include "coordinator/cluster.h"
#include "coordinator/inference_service.h"
#include "coordinator/worker_link_service.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
#include "model/fingerprint.h"
#include "model/model_folder.h"
#include "model/tokenizer.h"

ABSL_FLAG(std::string, model, "", "model folder (config.json, tokenizer, safetensors; or one .gguf)");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "address of the public API");
ABSL_FLAG(std::string, worker_listen, "127.0.0.1:50052", "address the worker leaders dial");
ABSL_FLAG(int, max_num_seqs, 64, "sequences running at once per replica");
ABSL_FLAG(int, max_batch_tokens, 512, "new tokens per step per replica");
ABSL_FLAG(int, max_queued, 1024, "queued requests before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, heartbeat_timeout_ms, 5000, "a silent replica is dropped after this");
ABSL_FLAG(std::string, chat_template, "auto",
          "template for messages: auto (the model's), chatml, smollm2, airomnimix or none");
ABSL_FLAG(int, max_in_flight, 0, "steps in flight per replica (0 = its pipeline depth)");

namespace tpserve {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

int Run() {
  SetLogTag("coordinator");
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    LogError("--model is required");
    return 2;
  }
  absl::StatusOr<ModelFolderInfo> folder = InspectModelFolder(model);
  if (!folder.ok()) {
    LogError(folder.status().ToString());
    return 1;
  }
  const ModelConfig* config = &folder->config;
  absl::StatusOr<std::string> fingerprint = ModelFingerprint(model);
  if (!fingerprint.ok()) {
    LogError(fingerprint.status().ToString());
    return 1;
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadForModel(model, *config); t.ok()) {
    tokenizer = std::move(*t);
  } else if (absl::IsNotFound(t.status())) {
    LogInfo(absl::StrCat(t.status().message(), ": requests must send prompt_token_ids"));
  } else {
    LogError(t.status().ToString());
    return 1;
  }

  absl::StatusOr<ChatChoice> chat = ChooseChatTemplate(absl::GetFlag(FLAGS_chat_template), *folder);
  if (!chat.ok()) {
    LogError(chat.status().ToString());
    return 2;
  }
  LogInfo(absl::StrCat("chat template: ", chat->name.empty() ? "none" : chat->name, " (", chat->reason, ")"));

  ClusterOptions options;
  options.limits.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  options.limits.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.max_queued = absl::GetFlag(FLAGS_max_queued);
  options.heartbeat_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_heartbeat_timeout_ms));
  options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  Cluster cluster(*config, *fingerprint, options);
  InferenceService inference(cluster, *config, std::filesystem::path(model).filename().string(),
                             *fingerprint, tokenizer.get(), *std::move(chat));
  WorkerLinkService worker_link(cluster);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int api_port = 0, worker_port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &api_port);
  builder.AddListeningPort(absl::GetFlag(FLAGS_worker_listen), grpc::InsecureServerCredentials(),
                           &worker_port);
  builder.RegisterService(&inference);
  builder.RegisterService(&worker_link);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || api_port == 0 || worker_port == 0) {
    LogError(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_listen), " and ",
                          absl::GetFlag(FLAGS_worker_listen)));
    return 1;
  }
  LogInfo(absl::StrCat("serving ", model, " (fingerprint ", *fingerprint, ") on ",
                       absl::GetFlag(FLAGS_listen), "; workers dial ", absl::GetFlag(FLAGS_worker_listen)));
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  // Health follows the replicas; heartbeats go out once a second.
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  bool serving = true;  // forces the first update
  while (!g_stop) {
    const bool now_serving = cluster.live_replicas() > 0;
    if (now_serving != serving) {
      health->SetServingStatus(now_serving);
      health->SetServingStatus("tpserve.v1.Inference", now_serving);
      serving = now_serving;
    }
    cluster.CheckHeartbeats();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  LogInfo("shutting down");
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("tpserve-coordinator --model DIR --listen ADDR --worker_listen ADDR");
  absl::ParseCommandLine(argc, argv);
  return tpserve::Run();
}
