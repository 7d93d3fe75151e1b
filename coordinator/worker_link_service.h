// gRPC service the worker leaders dial (worker.proto's WorkerLink), bridging each stream to
// the Cluster (layer: coordinator). One handler thread per connected replica.
#pragma once

#include "coordinator/cluster.h"
#include "tpserve/v1/worker.grpc.pb.h"

namespace tpserve {

class WorkerLinkService final : public v1::WorkerLink::Service {
 public:
  explicit WorkerLinkService(Cluster& cluster) : cluster_(cluster) {}

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;

 private:
  Cluster& cluster_;
};

}  // namespace tpserve
