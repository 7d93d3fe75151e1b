// The Communicator of a job of one process (layer: comm; no MPI): rank 0 of 1. Collectives
// leave the data as it is (the group's sum, max or gather of one rank), Split gives another
// group of one, and there is no peer to send to or receive from. Lets the Engine run in a
// process that has no MPI: the GPU test machine's end-to-end test (tests/gpu), or tools.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace tpserve {

class SoloCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }

  absl::Status AllReduceSum(float* data, size_t count) override;
  absl::Status AllReduceMax(int32_t* data, size_t count) override;
  // recv = send.
  absl::Status AllGather(const void* send, size_t bytes, void* recv) override;
  // InvalidArgument unless root is 0.
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  // Point-to-point calls are InvalidArgument (no other rank); FlushSends has nothing to wait
  // for; Probe finds nothing.
  absl::Status Send(const void* data, size_t bytes, int peer, int tag) override;
  absl::Status Recv(void* data, size_t bytes, int peer, int tag) override;
  absl::Status SendAsync(std::vector<uint8_t> bytes, int peer, int tag) override;
  absl::Status FlushSends() override;
  absl::StatusOr<bool> Probe(int peer, int tag) override;
  absl::StatusOr<std::vector<uint8_t>> RecvAny(int peer, int tag) override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
  // std::_Exit(code): the whole job is this process.
  [[noreturn]] void Abort(int code) override;
};

}  // namespace tpserve
