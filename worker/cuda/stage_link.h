// The device-to-device hand-off of the hidden state between pipeline stages, for
// CudaRankCompute (layer: worker, internal to worker/cuda; plain C++: streams, events and
// device memory come from kernels/cuda's plain headers, the transport is a DeviceCommunicator,
// NCCL in the worker). It is the link half of RankCompute::ConnectStages (worker/rank_compute.h):
//  - the warm-up exchange that connects each link and checks that its two ends agree;
//  - on a later stage, the receive of the step's input with the link's Recv on the compute
//    stream, before the step's kernels (before a graph launch; never inside a capture), into
//    the residual stream's first `tokens` rows (the compute clears padded rows itself);
//  - on a stage with a next stage, the send of the step's output: the residual's real rows are
//    copied into one of kSendSlots device buffers on the compute stream and sent from that
//    buffer on a stream of its own, so the next step may overwrite the residual while the send
//    waits for the next stage to receive it. Before a buffer is reused the compute stream waits
//    (on the device) for its previous send: at most kSendSlots sends are in flight.
// Threading: as its owner (one thread drives it). The owner makes its device current before
// every call; the streams, events and buffers here belong to that device.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "comm/device_communicator.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_runtime.h"
#include "worker/layout.h"

namespace tpserve::cuda_compute {

class StageLink {
 public:
  // Buffers for the sends to the next pipeline stage: how many may be in flight at once.
  static constexpr int kSendSlots = 2;

  // The link of the rank of `layout`, whose hidden state has `hidden` fp32 elements per row.
  // Connected in neither direction until Claim and Connect succeed. Touches no device.
  StageLink(const Layout& layout, int64_t hidden);
  StageLink(const StageLink&) = delete;
  StageLink& operator=(const StageLink&) = delete;
  // Frees the send buffers without waiting: the owner calls WaitForSends first.
  ~StageLink() = default;

  // The host-side first half of ConnectStages (the arguments as there). Errors, in this
  // order: FailedPrecondition "ConnectStages called twice" when a Claim succeeded before;
  // InvalidArgument for a link the layout cannot have (from_previous on the first stage,
  // to_next on the last) or a bad peer (a group of fewer than two ranks, a peer outside it,
  // or this rank itself). On success the ends are kept for Connect and every later Claim
  // fails, whatever Connect then reports. Touches no device.
  [[nodiscard]] absl::Status Claim(DeviceCommunicator* from_previous, int previous_peer,
                                   DeviceCommunicator* to_next, int next_peer);

  // The device half, after a successful Claim, with the owner's device current and `compute`
  // (the owner's stream, on which the steps run) idle. Allocates the warm-up buffer, creates
  // the send stream and the slots' events (to_next only), then the warm-up exchange: receives
  // the previous stage's hello (its hidden size and stage) on `compute`, then sends this
  // rank's on the send stream and waits for that send (the send is tried even when the
  // receive failed, so the next stage learns of it from the agreed status, not a timeout),
  // and checks the hello; last, sizes each send slot for `capacity_rows` rows.
  // Synchronous: returns with both streams idle. Errors: those of the runtime calls
  // (ResourceExhausted when a buffer does not fit) and of the links (Unavailable when a link
  // failed or its peer did not take part in time), each prefixed with the link it concerns;
  // FailedPrecondition when the previous stage's hidden size or stage is not this rank's
  // hidden size and stage - 1. On success receives() and sends() report the connected
  // directions; after an error neither is connected and the owner is unfit for Forward.
  [[nodiscard]] absl::Status Connect(kernels::cuda::Stream compute, int64_t capacity_rows);

  // Connected from the previous stage: Forward receives its input with EnqueueReceive.
  bool receives() const { return from_previous_ != nullptr; }
  // Connected to the next stage: Forward sends its output with EnqueueSend.
  bool sends() const { return to_next_ != nullptr; }

  // Only when receives(): enqueues on `compute` the receive of `tokens` rows ([tokens, hidden]
  // fp32) from the previous stage into device memory `dst`. Asynchronous: the rows are there
  // once `compute` reaches the receive. Errors: the link's, prefixed "receive the hidden
  // state from the previous stage" (nothing enqueued for InvalidArgument).
  [[nodiscard]] absl::Status EnqueueReceive(void* dst, int64_t tokens,
                                            kernels::cuda::Stream compute);

  // Only when sends(): sends the first `tokens` rows of `src` ([rows, hidden] fp32, device:
  // the residual stream, written by work already queued on `compute`) to the next stage
  // through the next send slot: `compute` waits (on the device) for that slot's previous send,
  // copies the rows into the slot and marks the copy; the send stream waits for the mark, sends
  // and marks the send. Asynchronous: returns without waiting for the copy or the send, except
  // that a slot smaller than `tokens` rows (the owner's scratch grew to `capacity_rows` rows)
  // is regrown to `capacity_rows` rows after the host waited for its previous send. Errors:
  // the runtime's and the link's, prefixed with what failed ("send the hidden state to the
  // next stage", ...); ResourceExhausted when a regrown slot does not fit.
  [[nodiscard]] absl::Status EnqueueSend(const void* src, int64_t tokens, int64_t capacity_rows,
                                         kernels::cuda::Stream compute);

  // Blocks until every send enqueued so far has completed; OK at once when no send stream was
  // created. The owner calls it before destroying the link (the next stage must receive every
  // step it was sent, and the send buffers go with this object). Errors: the first error of
  // the send stream's work.
  [[nodiscard]] absl::Status WaitForSends();

 private:
  struct SendSlot {
    kernels::cuda::DeviceBuffer buffer;  // [rows, hidden] fp32: a step's output while it is sent
    kernels::cuda::Event copied;         // compute stream: the output is in `buffer`
    kernels::cuda::Event sent;           // send stream: the send from `buffer` is done
  };

  const int64_t hidden_;
  const int stage_;
  const bool first_stage_, last_stage_;

  // The ends Claim accepted, for Connect.
  bool claimed_ = false;
  DeviceCommunicator* claimed_from_previous_ = nullptr;
  DeviceCommunicator* claimed_to_next_ = nullptr;
  int claimed_previous_peer_ = -1, claimed_next_peer_ = -1;

  // The connected ends (after Connect succeeded); null where the hidden state goes through the
  // host.
  DeviceCommunicator* from_previous_ = nullptr;
  DeviceCommunicator* to_next_ = nullptr;
  int previous_peer_ = -1, next_peer_ = -1;
  kernels::cuda::OwnedStream send_stream_;  // the sends to the next stage
  SendSlot send_slots_[kSendSlots];
  int next_slot_ = 0;
};

}  // namespace tpserve::cuda_compute
