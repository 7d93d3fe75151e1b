// A fake two-rank device link for the GPU tests (tests/gpu; plain C++ over kernels/cuda's
// device_runtime.h and cuda_status.h): LoopbackLink owns the two ends, DeviceCommunicators of
// rank 0 and rank 1 in a group of 2, in ONE process on ONE GPU, so that a test can connect two
// computes with RankCompute::ConnectStages where the worker would use NCCL.
//
// Point-to-point only. Send enqueues on its stream an asynchronous device-to-device copy of the
// bytes into a mailbox buffer, then records the mailbox's `ready` event; the matching Recv (the
// peer's, first in first out per direction) makes its stream wait for that event, copies out of
// the mailbox and records the mailbox's `released` event, after which a later Send may reuse
// the mailbox (its stream waits for `released` first). No call synchronises the host; a Send
// that finds no free mailbox large enough allocates one (cudaMalloc).
// Unlike NCCL, a Send completes without its receiver, so ONE thread may drive both ends and
// any number of sends may wait for their receives, provided each Send is CALLED before its
// matching Recv: a Recv with no message waiting fails (FailedPrecondition) instead of blocking.
// Collectives return Unimplemented.
// Errors: InvalidArgument for a peer that is not the other end, or a Recv whose size differs
// from the waiting message's (nothing is enqueued or consumed then); the runtime's errors as
// device_runtime.h reports them. Argument and queue checks come first and touch no device.
// Threading: a mutex guards the queues, so the ends may be driven from two threads. Streams
// and data must belong to the one device that is current when the link allocates. The link
// must outlive every use of its ends and every queued copy: destroy it after the computes
// (whose destructors wait for their sends) and after the receivers synchronised.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "comm/device_communicator.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_runtime.h"

namespace tpserve::testing {

class LoopbackLink {
 public:
  LoopbackLink() : ends_{End(this, 0), End(this, 1)} {}
  LoopbackLink(const LoopbackLink&) = delete;
  LoopbackLink& operator=(const LoopbackLink&) = delete;

  // The end of rank `rank` (0 or 1); its peer is 1 - rank.
  DeviceCommunicator& end(int rank) { return ends_[rank]; }

  // Messages sent by rank `from` (0 or 1) and not yet received by the other end.
  int pending(int from) const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(queues_[from].size());
  }
  // Messages sent by rank `from` so far.
  int sent(int from) const {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_[from];
  }

 private:
  class End final : public DeviceCommunicator {
   public:
    End(LoopbackLink* link, int rank) : link_(link), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return 2; }
    absl::Status AllReduceSum(void*, size_t, DeviceDType, void*) override {
      return absl::UnimplementedError("LoopbackLink: point-to-point only");
    }
    absl::Status AllGather(const void*, size_t, void*, void*) override {
      return absl::UnimplementedError("LoopbackLink: point-to-point only");
    }
    absl::Status Send(const void* data, size_t bytes, int peer, void* stream) override {
      return link_->Send(rank_, data, bytes, peer, kernels::cuda::Stream{stream});
    }
    absl::Status Recv(void* data, size_t bytes, int peer, void* stream) override {
      return link_->Recv(rank_, data, bytes, peer, kernels::cuda::Stream{stream});
    }

   private:
    LoopbackLink* link_;
    int rank_;
  };

  struct Mailbox {
    kernels::cuda::DeviceBuffer buffer;
    kernels::cuda::Event ready;     // sender's stream: the bytes are in `buffer`
    kernels::cuda::Event released;  // receiver's stream: the bytes were copied out
    bool in_use = false;
  };
  struct Message {
    Mailbox* mailbox;
    size_t bytes;
  };

  static absl::Status CheckPeer(int rank, int peer) {
    if (peer == 1 - rank) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("LoopbackLink: rank ", rank, " has only peer ", 1 - rank, ", not ", peer));
  }

  // One row of `bytes`: the 2-D copy is kernels/cuda's device-to-device copy.
  static absl::Status Copy(void* dst, const void* src, size_t bytes, kernels::cuda::Stream s) {
    return kernels::cuda::CopyDeviceToDevice2DAsync(dst, bytes, src, bytes, bytes, 1, s);
  }

  absl::Status Send(int rank, const void* data, size_t bytes, int peer,
                    kernels::cuda::Stream stream) {
    if (absl::Status s = CheckPeer(rank, peer); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    Mailbox* box = nullptr;
    for (const std::unique_ptr<Mailbox>& m : mailboxes_) {
      if (!m->in_use && m->buffer.size() >= bytes) {
        box = m.get();
        break;
      }
    }
    if (box == nullptr) {
      auto fresh = std::make_unique<Mailbox>();
      absl::StatusOr<kernels::cuda::DeviceBuffer> buffer =
          kernels::cuda::DeviceBuffer::Allocate(bytes);
      if (!buffer.ok()) return buffer.status();
      fresh->buffer = std::move(buffer).value();
      absl::StatusOr<kernels::cuda::Event> ready = kernels::cuda::Event::Create();
      if (!ready.ok()) return ready.status();
      fresh->ready = std::move(ready).value();
      absl::StatusOr<kernels::cuda::Event> released = kernels::cuda::Event::Create();
      if (!released.ok()) return released.status();
      fresh->released = std::move(released).value();
      mailboxes_.push_back(std::move(fresh));
      box = mailboxes_.back().get();
    }
    // The previous receive from this mailbox must have copied out before it is overwritten.
    if (absl::Status s = box->released.MakeStreamWait(stream); !s.ok()) return s;
    if (absl::Status s = Copy(box->buffer.data(), data, bytes, stream); !s.ok()) return s;
    if (absl::Status s = box->ready.Record(stream); !s.ok()) return s;
    box->in_use = true;
    queues_[rank].push_back({box, bytes});
    ++sent_[rank];
    return absl::OkStatus();
  }

  absl::Status Recv(int rank, void* data, size_t bytes, int peer, kernels::cuda::Stream stream) {
    if (absl::Status s = CheckPeer(rank, peer); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    std::deque<Message>& queue = queues_[peer];
    if (queue.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "LoopbackLink: rank ", rank, " receives before rank ", peer,
          " sent (a loopback link needs each Send called before its Recv)"));
    }
    const Message m = queue.front();
    if (m.bytes != bytes) {
      return absl::InvalidArgumentError(absl::StrCat("LoopbackLink: rank ", rank, " receives ",
                                                     bytes, " bytes, rank ", peer, " sent ",
                                                     m.bytes));
    }
    if (absl::Status s = m.mailbox->ready.MakeStreamWait(stream); !s.ok()) return s;
    if (absl::Status s = Copy(data, m.mailbox->buffer.data(), bytes, stream); !s.ok()) return s;
    if (absl::Status s = m.mailbox->released.Record(stream); !s.ok()) return s;
    m.mailbox->in_use = false;
    queue.pop_front();
    return absl::OkStatus();
  }

  mutable std::mutex mu_;
  End ends_[2];
  std::vector<std::unique_ptr<Mailbox>> mailboxes_;
  std::deque<Message> queues_[2];  // by sender
  int sent_[2] = {0, 0};
};

}  // namespace tpserve::testing
