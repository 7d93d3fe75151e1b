#include "coordinator/worker_link_service.h"

#include <chrono>
#include <mutex>
#include <vector>

#include "common/logging.h"
#include "proto/codec/step_codec.h"

namespace tpserve {
namespace {

// Writes to one replica's stream; the cluster calls it from several threads.
class StreamLink final : public ReplicaLink {
 public:
  StreamLink(grpc::ServerContext* context,
             grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream)
      : context_(context), stream_(stream) {}

  bool Send(const StepPlan& plan) override {
    v1::CoordinatorMessage msg;
    ToProto(plan, msg.mutable_step_plan());
    return Write(msg);
  }
  bool SendHeartbeat() override {
    v1::CoordinatorMessage msg;
    msg.mutable_heartbeat()->set_unix_millis(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch()).count()));
    return Write(msg);
  }
  void Close() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) context_->TryCancel();
  }
  // Writes `reply` and then whatever the cluster sent while the replica was being added, so
  // the register reply is always the first message the worker reads.
  bool Open(const v1::CoordinatorMessage& reply) {
    std::lock_guard<std::mutex> lock(mu_);
    bool ok = stream_->Write(reply);
    for (const v1::CoordinatorMessage& m : held_) ok = ok && stream_->Write(m);
    held_.clear();
    open_ = true;
    return ok;
  }
  // Called when the handler returns: the stream must not be touched after that.
  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }

 private:
  bool Write(const v1::CoordinatorMessage& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    if (!open_) {
      held_.push_back(msg);
      return true;
    }
    return stream_->Write(msg);
  }
  grpc::ServerContext* context_;
  grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream_;
  std::mutex mu_;
  bool open_ = false;
  bool closed_ = false;
  std::vector<v1::CoordinatorMessage> held_;
};

}  // namespace

grpc::Status WorkerLinkService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  v1::WorkerMessage first;
  if (!stream->Read(&first) || !first.has_register_()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "first message must be Register");
  }
  const v1::Register& reg = first.register_();
  ReplicaInfo info{reg.name(), reg.model_fingerprint(), static_cast<int32_t>(reg.tensor_parallel()),
                   static_cast<int32_t>(reg.pipeline_parallel()), static_cast<int32_t>(reg.kv_blocks()),
                   static_cast<int32_t>(reg.kv_block_size()), reg.backend(),
                   reg.kv_cache_bytes(), reg.weight_bytes()};
  auto link = std::make_shared<StreamLink>(context, stream);
  v1::CoordinatorMessage reply;
  // Register before answering, so the reply is the first message the worker reads.
  absl::Status added = cluster_.AddReplica(info, link);
  reply.mutable_register_reply()->set_accepted(added.ok());
  reply.mutable_register_reply()->set_reason(std::string(added.message()));
  if (!added.ok()) {
    LogError(added.message());
    stream->Write(reply);
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, std::string(added.message()));
  }
  link->Open(reply);
  LogInfo("replica \"" + info.name + "\" registered: tp " + std::to_string(info.tp) + " pp " +
          std::to_string(info.pp) + ", " + std::to_string(info.kv_blocks) + " KV blocks of " +
          std::to_string(info.kv_block_size));
  v1::WorkerMessage msg;
  while (stream->Read(&msg)) {
    if (msg.has_step_result()) {
      cluster_.StepDone(info.name, FromProto(msg.step_result()), msg.step_result().error());
    } else {
      cluster_.Touch(info.name);
    }
  }
  link->Detach();
  LogError("replica \"" + info.name + "\" disconnected; its requests are re-queued");
  cluster_.ReplicaLost(info.name);
  return grpc::Status::OK;
}

}  // namespace tpserve
