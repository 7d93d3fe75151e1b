// Collectives and point-to-point transfers between the ranks of one worker job
// (layer: comm; moves bytes, knows nothing of models). One Communicator is a group of ranks;
// calls on it are blocking and must be made by one thread at a time. Collective calls must be
// made by every rank of the group in the same order. Errors are Unavailable (a peer or the
// transport failed) or InvalidArgument (bad arguments).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tpserve {

class Communicator {
 public:
  virtual ~Communicator() = default;

  // This rank's index in the group, and the group's size.
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In-place elementwise sum of `count` fp32 values across the group.
  [[nodiscard]] virtual absl::Status AllReduceSum(float* data, size_t count) = 0;
  // In-place elementwise max of `count` int32 values across the group.
  [[nodiscard]] virtual absl::Status AllReduceMax(int32_t* data, size_t count) = 0;
  // Gathers `bytes` from every rank into `recv` ([size() * bytes], rank-major) on all ranks.
  [[nodiscard]] virtual absl::Status AllGather(const void* send, size_t bytes, void* recv) = 0;
  // Copies `bytes` at `data` on rank `root` into `data` on every rank.
  [[nodiscard]] virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;
  // Sends or receives exactly `bytes` to/from `peer` with message tag `tag`.
  [[nodiscard]] virtual absl::Status Send(const void* data, size_t bytes, int peer, int tag) = 0;
  [[nodiscard]] virtual absl::Status Recv(void* data, size_t bytes, int peer, int tag) = 0;
  // Starts sending `bytes` to `peer` and returns at once; the communicator keeps the buffer
  // until the transfer completes. Messages to one peer with one tag arrive in order. Lets a
  // pipeline stage forward its output without waiting for the next stage to post a receive.
  [[nodiscard]] virtual absl::Status SendAsync(std::vector<uint8_t> bytes, int peer, int tag) = 0;
  // Waits until every SendAsync of this rank has completed.
  [[nodiscard]] virtual absl::Status FlushSends() = 0;
  // True when a message from `peer`/`tag` is waiting (does not receive it).
  [[nodiscard]] virtual absl::StatusOr<bool> Probe(int peer, int tag) = 0;
  // Receives a message of unknown length from `peer`/`tag` (the sender uses Send).
  [[nodiscard]] virtual absl::StatusOr<std::vector<uint8_t>> RecvAny(int peer, int tag) = 0;

  // Splits into sub-groups: ranks with equal `color` form one group, ordered by `key`.
  // Collective over this group.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color,
                                                                            int key) = 0;

  // Ends the whole job at once with `code` (used when ranks cannot agree to shut down).
  [[noreturn]] virtual void Abort(int code) = 0;
};

// Combines one status per rank into the same verdict on every rank: OK if all ranks are OK,
// else the first failing rank's error (lowest rank), its message prefixed with "rank R: ".
// Collective. Used after loading so every rank reports the same reason and exits together.
[[nodiscard]] absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& local);

// Sends a length-prefixed byte string (Broadcast of a size, then of the bytes).
[[nodiscard]] absl::Status BroadcastBytes(Communicator& comm, std::vector<uint8_t>& bytes,
                                          int root);

}  // namespace tpserve
