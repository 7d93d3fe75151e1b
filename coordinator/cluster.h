// The coordinator's state: registered replicas, the requests they run and those waiting for
// one (layer: coordinator). Routing, scheduling and result handling happen here under one
// mutex; the gRPC services call in from their threads. A replica's transport is behind
// ReplicaLink so that this file needs no gRPC.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/step.h"
#include "coordinator/kv_block_manager.h"
#include "coordinator/request.h"
#include "coordinator/scheduler.h"
#include "model/config.h"

namespace tpserve {

// Sends plans to one replica's leader. Send may block briefly; false when the link is broken.
class ReplicaLink {
 public:
  virtual ~ReplicaLink() = default;
  virtual bool Send(const StepPlan& plan) = 0;
  virtual bool SendHeartbeat() = 0;
  // Breaks the link (the replica's handler then calls ReplicaLost).
  virtual void Close() = 0;
};

struct ReplicaInfo {
  std::string name;
  std::string fingerprint;
  int32_t tp = 1;
  int32_t pp = 1;
  int32_t kv_blocks = 0;
  int32_t kv_block_size = 16;
  std::string backend = "cpu";
  uint64_t kv_cache_bytes = 0;  // leader rank's
  uint64_t weight_bytes = 0;    // leader rank's
};

struct ReplicaSnapshot {
  ReplicaInfo info;
  bool serving = false;
  int32_t kv_free = 0;
  int32_t running = 0;
  int32_t queued = 0;
};

struct ClusterOptions {
  SchedulerLimits limits;
  int32_t max_queued = 1024;                       // requests waiting in all queues together
  std::chrono::milliseconds heartbeat_timeout{5000};
  int32_t max_in_flight = 0;  // steps in flight per replica; 0 = its pipeline depth (PP)
};

class Cluster {
 public:
  Cluster(ModelConfig config, std::string fingerprint, ClusterOptions options);

  // Registers a replica; FailedPrecondition when its model differs, AlreadyExists when a
  // live replica has the same name. Its queue is filled from pending requests at once.
  absl::Status AddReplica(const ReplicaInfo& info, std::shared_ptr<ReplicaLink> link);
  // The replica's results for a step (with `error` non-empty when the step failed there).
  void StepDone(const std::string& replica, const StepResult& result, const std::string& error);
  // Heartbeat or any message from the replica: it is alive.
  void Touch(const std::string& replica);
  // The replica's link broke: its requests are re-queued elsewhere, recomputed from their
  // prompt and the tokens generated so far; nothing is lost or answered twice.
  void ReplicaLost(const std::string& replica);
  // Sends heartbeats and closes links that stayed silent past the timeout.
  void CheckHeartbeats();

  // Admits a request (already validated). ResourceExhausted when the queue is full.
  absl::Status Submit(std::shared_ptr<Request> request);
  // Stops a request; its blocks are returned (at once, or when its step comes back).
  void Cancel(const std::shared_ptr<Request>& request);

  int32_t live_replicas() const;
  std::vector<ReplicaSnapshot> Snapshot() const;
  int32_t pending() const;

 private:
  struct Replica {
    ReplicaInfo info;
    std::shared_ptr<ReplicaLink> link;
    std::unique_ptr<KvBlockManager> kv;
    std::vector<Sequence*> running;
    std::deque<Sequence*> waiting;
    std::map<uint64_t, std::shared_ptr<Request>> requests;  // by sequence id
    std::map<uint64_t, Schedule> in_flight;                 // by step id
    std::chrono::steady_clock::time_point last_seen;
  };

  Replica* PickReplica(const Request& request);  // most free KV, least queued work
  void Enqueue(Replica& r, std::shared_ptr<Request> request);
  void Pump(Replica& r);
  void Finish(Replica& r, const std::shared_ptr<Request>& request, Finish why, RequestEvent event);
  void AdmitPending();

  const ModelConfig config_;
  const std::string fingerprint_;
  const ClusterOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Replica>> replicas_;
  std::deque<std::shared_ptr<Request>> pending_;  // no replica can take them yet
  std::map<std::string, ReplicaInfo> lost_;       // shown as NOT_SERVING until they return
  uint64_t next_step_ = 1;
  uint64_t next_arrival_ = 1;
};

}  // namespace tpserve
