#include "worker/leader_link.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <optional>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "grpcpp/grpcpp.h"
#include "proto/codec/step_codec.h"
#include "tpserve/v1/worker.grpc.pb.h"

namespace tpserve {
namespace {

using Stream = grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>;

// Outcome of one connection.
enum class Session { kRetry, kRefused, kStopped, kEngineFailed };

Session RunSession(Engine& engine, const LeaderLinkOptions& o, const std::atomic<bool>& stop,
                   absl::Status* engine_error) {
  auto channel = grpc::CreateChannel(o.coordinator, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(1))) {
    return Session::kRetry;
  }
  auto stub = v1::WorkerLink::NewStub(channel);
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = stub->Connect(&context);
  std::mutex write_mu;
  auto write = [&](const v1::WorkerMessage& m) {
    std::lock_guard<std::mutex> lock(write_mu);
    return stream->Write(m);
  };

  v1::WorkerMessage reg;
  v1::Register* r = reg.mutable_register_();
  r->set_name(o.name);
  r->set_model_fingerprint(o.fingerprint);
  r->set_tensor_parallel(engine.layout().tp);
  r->set_pipeline_parallel(engine.layout().pp);
  r->set_kv_blocks(static_cast<uint32_t>(engine.kv_num_blocks()));
  r->set_kv_block_size(static_cast<uint32_t>(engine.kv_block_size()));
  r->set_backend(std::string(engine.backend()));
  r->set_kv_cache_bytes(engine.kv_bytes());
  r->set_weight_bytes(engine.weight_bytes());
  v1::CoordinatorMessage reply;
  if (!write(reg) || !stream->Read(&reply)) return Session::kRetry;
  if (!reply.has_register_reply() || !reply.register_reply().accepted()) {
    LogError(absl::StrCat("coordinator refused replica \"", o.name, "\": ",
                          reply.register_reply().reason()));
    return Session::kRefused;
  }
  LogInfo(absl::StrCat("registered with ", o.coordinator, " as \"", o.name, "\""));

  // Heartbeats and the stop flag are watched from a side thread.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread beat([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (!done) {
      cv.wait_for(lock, std::chrono::seconds(1), [&] { return done; });
      if (done) break;
      if (stop) {
        context.TryCancel();
        break;
      }
      v1::WorkerMessage hb;
      hb.mutable_heartbeat()->set_unix_millis(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::system_clock::now().time_since_epoch()).count()));
      // Write without the queue's lock: a slow stream must not hold up the step loop.
      lock.unlock();
      write(hb);
      lock.lock();
    }
  });

  // A reader thread queues plans; this thread keeps up to PP of them in the pipeline and
  // returns results as the last stage delivers them.
  std::deque<StepPlan> plans;
  bool closed = false;
  std::thread reader([&] {
    v1::CoordinatorMessage msg;
    while (stream->Read(&msg)) {
      if (!msg.has_step_plan()) continue;
      std::lock_guard<std::mutex> lock(mu);
      plans.push_back(FromProto(msg.step_plan()));
      cv.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu);
    closed = true;
    cv.notify_all();
  });
  auto send_result = [&](const StepResult& result, uint64_t step_id, const std::string& error) {
    v1::WorkerMessage out;
    ToProto(result, out.mutable_step_result());
    out.mutable_step_result()->set_step_id(step_id);
    out.mutable_step_result()->set_error(error);
    return write(out);
  };
  Session outcome = Session::kRetry;
  for (;;) {
    std::optional<StepPlan> plan;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (engine.in_flight() == 0) {
        cv.wait(lock, [&] { return !plans.empty() || closed; });
      }
      if (!plans.empty() && engine.in_flight() < engine.layout().pp) {
        plan = std::move(plans.front());
        plans.pop_front();
      } else if (closed && engine.in_flight() == 0) {
        break;
      }
    }
    absl::Status failed;
    if (plan.has_value()) {
      absl::Status submitted = engine.Submit(*plan);
      if (submitted.code() == absl::StatusCode::kInvalidArgument) {
        send_result(StepResult(), plan->step_id, submitted.ToString());  // the job is fine
        continue;
      }
      failed = submitted;
    } else {
      absl::StatusOr<std::optional<StepResult>> ready = engine.TryCollect();
      if (ready.ok() && ready->has_value()) {
        send_result(**ready, (*ready)->step_id, "");
      } else if (ready.ok()) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      failed = ready.status();
    }
    if (!failed.ok()) {
      *engine_error = failed;  // a rank is gone: this job cannot serve any more
      outcome = Session::kEngineFailed;
      context.TryCancel();
      break;
    }
  }
  // Results of plans still in the pipeline have nowhere to go: collect and drop them.
  while (outcome != Session::kEngineFailed && engine.in_flight() > 0 && engine.Collect().ok()) {
  }
  context.TryCancel();
  reader.join();
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_all();
  beat.join();
  if (outcome == Session::kRetry) stream->Finish();
  return stop ? Session::kStopped : outcome;
}

}  // namespace

absl::Status ServeCoordinator(Engine& engine, const LeaderLinkOptions& options,
                              const std::atomic<bool>& stop) {
  bool warned = false;
  while (!stop) {
    absl::Status engine_error;
    switch (RunSession(engine, options, stop, &engine_error)) {
      case Session::kRefused:
        return absl::FailedPreconditionError("the coordinator refused this replica");
      case Session::kEngineFailed:
        return engine_error;
      case Session::kStopped:
        return absl::OkStatus();
      case Session::kRetry:
        if (!warned) LogInfo(absl::StrCat("waiting for the coordinator at ", options.coordinator));
        warned = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace tpserve
