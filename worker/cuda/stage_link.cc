// StageLink (stage_link.h): CudaRankCompute's device-to-device hand-off between pipeline
// stages. Plain C++: the stream, events, copies and buffers come from kernels/cuda's plain
// headers, never from CUDA headers.
#include "worker/cuda/stage_link.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "worker/cuda/compute_util.h"

namespace tpserve::cuda_compute {

namespace kc = kernels::cuda;

StageLink::StageLink(const Layout& layout, int64_t hidden)
    : hidden_(hidden),
      stage_(layout.stage),
      first_stage_(layout.first_stage()),
      last_stage_(layout.last_stage()) {}

absl::Status StageLink::Claim(DeviceCommunicator* from_previous, int previous_peer,
                              DeviceCommunicator* to_next, int next_peer) {
  if (claimed_) return absl::FailedPreconditionError("ConnectStages called twice");
  auto check = [](DeviceCommunicator* link, int peer, absl::string_view which) {
    if (link == nullptr || (link->size() >= 2 && peer >= 0 && peer < link->size() &&
                            peer != link->rank())) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat("the link ", which, ": peer ", peer,
                                                   " of a group of ", link->size(),
                                                   " where this rank is ", link->rank()));
  };
  if (from_previous != nullptr && first_stage_) {
    return absl::InvalidArgumentError("a link from the previous stage on the first stage");
  }
  if (to_next != nullptr && last_stage_) {
    return absl::InvalidArgumentError("a link to the next stage on the last stage");
  }
  RETURN_IF_ERROR(check(from_previous, previous_peer, "from the previous stage"));
  RETURN_IF_ERROR(check(to_next, next_peer, "to the next stage"));
  claimed_ = true;
  claimed_from_previous_ = from_previous;
  claimed_previous_peer_ = previous_peer;
  claimed_to_next_ = to_next;
  claimed_next_peer_ = next_peer;
  return absl::OkStatus();
}

absl::Status StageLink::Connect(kc::Stream compute, int64_t capacity_rows) {
  if (!claimed_ || from_previous_ != nullptr || to_next_ != nullptr) {
    return absl::InternalError("StageLink::Connect without a fresh Claim");
  }
  DeviceCommunicator* const from_previous = claimed_from_previous_;
  DeviceCommunicator* const to_next = claimed_to_next_;
  const int previous_peer = claimed_previous_peer_, next_peer = claimed_next_peer_;
  // What may fail locally comes first: a failure there leaves the neighbours to time out in
  // their half of the exchange, bounded by their communicator's timeout.
  kc::DeviceBuffer hello;  // [2] int32 sent, then [2] int32 received
  RETURN_IF_ERROR(Grow(hello, 16, "the stage link check"));
  if (to_next != nullptr) {
    ASSIGN_OR_RETURN(send_stream_, kc::OwnedStream::Create());
    for (SendSlot& slot : send_slots_) {
      ASSIGN_OR_RETURN(slot.copied, kc::Event::Create());
      ASSIGN_OR_RETURN(slot.sent, kc::Event::Create());
    }
  }
  // The exchange: receive from the previous stage, then send to the next, on the streams the
  // steps use. Down the pipeline each rank's receive meets its predecessor's send, the first
  // stage only sends: nothing waits in a circle. The send is tried even when the receive
  // failed, so that the next stage learns of it from the agreed status, not a timeout.
  const int32_t mine[2] = {static_cast<int32_t>(hidden_), stage_};
  int32_t theirs[2] = {-1, -1};
  absl::Status status = absl::OkStatus();
  if (from_previous != nullptr) {
    status = Prefixed(from_previous->Recv(hello.as<int32_t>() + 2, 8, previous_peer,
                                          compute.handle),
                      "the link from the previous stage");
  }
  if (to_next != nullptr) {
    const kc::Stream send = send_stream_.get();
    absl::Status sent = Prefixed(kc::CopyHostToDeviceAsync(hello.data(), mine, 8, send),
                                 "the link to the next stage");
    if (sent.ok()) {
      sent = Prefixed(to_next->Send(hello.data(), 8, next_peer, send.handle),
                      "the link to the next stage");
    }
    if (sent.ok()) sent = kc::SynchronizeStream(send);
    if (status.ok()) status = sent;
  }
  if (status.ok() && from_previous != nullptr) {
    status = Prefixed(kc::CopyDeviceToHostAsync(theirs, hello.as<int32_t>() + 2, 8, compute),
                      "the link from the previous stage");
  }
  if (absl::Status synced = kc::SynchronizeStream(compute); status.ok()) status = synced;
  RETURN_IF_ERROR(status);
  if (from_previous != nullptr && (theirs[0] != hidden_ || theirs[1] != stage_ - 1)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the link from the previous stage connects stage ", theirs[1], " of hidden size ",
        theirs[0], " to stage ", stage_, " of hidden size ", hidden_));
  }
  if (to_next != nullptr) {
    for (SendSlot& slot : send_slots_) {
      RETURN_IF_ERROR(Grow(slot.buffer, capacity_rows * hidden_ * 4,
                           "a buffer for the next stage"));
    }
  }
  from_previous_ = from_previous;
  previous_peer_ = previous_peer;
  to_next_ = to_next;
  next_peer_ = next_peer;
  return absl::OkStatus();
}

absl::Status StageLink::EnqueueReceive(void* dst, int64_t tokens, kc::Stream compute) {
  return Prefixed(from_previous_->Recv(dst, static_cast<size_t>(tokens * hidden_ * 4),
                                       previous_peer_, compute.handle),
                  "receive the hidden state from the previous stage");
}

absl::Status StageLink::EnqueueSend(const void* src, int64_t tokens, int64_t capacity_rows,
                                    kc::Stream compute) {
  SendSlot& slot = send_slots_[next_slot_];
  const int64_t bytes = tokens * hidden_ * 4;
  if (static_cast<int64_t>(slot.buffer.size()) < bytes) {
    // The scratch grew: so does the slot, once its previous send no longer reads it.
    RETURN_IF_ERROR(Prefixed(slot.sent.Synchronize(), "a send to the next stage"));
    RETURN_IF_ERROR(Grow(slot.buffer, capacity_rows * hidden_ * 4, "a buffer for the next stage"));
  }
  const kc::Stream s = compute, send = send_stream_.get();
  RETURN_IF_ERROR(Prefixed(slot.sent.MakeStreamWait(s), "wait for a send buffer"));
  RETURN_IF_ERROR(Prefixed(kc::CopyDeviceToDevice2DAsync(slot.buffer.data(), hidden_ * 4, src,
                                                         hidden_ * 4, hidden_ * 4, tokens, s),
                           "copy the hidden state for the next stage"));
  RETURN_IF_ERROR(Prefixed(slot.copied.Record(s), "copy the hidden state for the next stage"));
  RETURN_IF_ERROR(Prefixed(slot.copied.MakeStreamWait(send), "send to the next stage"));
  RETURN_IF_ERROR(Prefixed(
      to_next_->Send(slot.buffer.data(), static_cast<size_t>(bytes), next_peer_, send.handle),
      "send the hidden state to the next stage"));
  RETURN_IF_ERROR(Prefixed(slot.sent.Record(send), "send to the next stage"));
  next_slot_ = (next_slot_ + 1) % kSendSlots;
  return absl::OkStatus();
}

absl::Status StageLink::WaitForSends() {
  if (send_stream_.get().handle == nullptr) return absl::OkStatus();
  return kc::SynchronizeStream(send_stream_.get());
}

}  // namespace tpserve::cuda_compute
