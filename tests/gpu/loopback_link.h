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
//
// HostCollectiveGroup, below, is the collective counterpart for tensor parallelism: the ranks of
// one TP group as threads of one process on one GPU, their AllReduceSum and AllGather meeting
// on the host.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
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


// The ranks of one tensor-parallel group as threads of ONE process on ONE GPU (NCCL refuses
// two ranks on one GPU): end(r) is the DeviceCommunicator of rank r, to be driven by its own
// thread. A collective synchronises the caller's stream, copies its input to the host, waits
// for every rank's matching call, combines on the host and copies the result back before it
// returns. So, unlike NCCL, it blocks the host and cannot be captured into a CUDA graph (a
// compute using it needs graphs off). AllReduceSum adds in rank order in fp32 and rounds the
// sum once (NCCL's ring may round bf16 partial sums on the way: within float reassociation);
// AllGather concatenates rank-major. Count 0 returns at once, as NCCL does. Send and Recv
// return Unimplemented.
// Failure: a rank that stops early must call Abort(); a rank waiting longer than `timeout` for
// the others aborts the group. After an abort every waiting and later call returns
// Unavailable, so no thread is left waiting for one that is gone.
// Threading: one thread per end; the ends share a mutex.
class HostCollectiveGroup {
 public:
  explicit HostCollectiveGroup(int size,
                               std::chrono::seconds timeout = std::chrono::seconds(60))
      : size_(size), timeout_(timeout), slots_(static_cast<size_t>(size)) {
    for (int r = 0; r < size; ++r) ends_.push_back(std::make_unique<End>(this, r));
  }
  HostCollectiveGroup(const HostCollectiveGroup&) = delete;
  HostCollectiveGroup& operator=(const HostCollectiveGroup&) = delete;

  DeviceCommunicator& end(int rank) { return *ends_[static_cast<size_t>(rank)]; }

  // Releases every rank waiting in (or later entering) a collective with Unavailable.
  void Abort() {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

  // Collective calls completed by rank 0 so far.
  int collectives() const {
    std::lock_guard<std::mutex> lock(mu_);
    return collectives_;
  }

 private:
  class End final : public DeviceCommunicator {
   public:
    End(HostCollectiveGroup* group, int rank) : group_(group), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return group_->size_; }
    absl::Status AllReduceSum(void* data, size_t count, DeviceDType dtype,
                              void* stream) override {
      return group_->AllReduceSum(rank_, data, count, dtype, kernels::cuda::Stream{stream});
    }
    absl::Status AllGather(const void* send, size_t bytes, void* recv, void* stream) override {
      return group_->AllGather(rank_, send, bytes, recv, kernels::cuda::Stream{stream});
    }
    absl::Status Send(const void*, size_t, int, void*) override {
      return absl::UnimplementedError("HostCollectiveGroup: collectives only");
    }
    absl::Status Recv(void*, size_t, int, void*) override {
      return absl::UnimplementedError("HostCollectiveGroup: collectives only");
    }

   private:
    HostCollectiveGroup* group_;
    int rank_;
  };

  // Waits for every rank; Unavailable after an abort or the timeout (which aborts).
  absl::Status Barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    if (aborted_) return absl::UnavailableError("HostCollectiveGroup: aborted");
    const uint64_t generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return absl::OkStatus();
    }
    const bool released = cv_.wait_for(lock, timeout_, [&] {
      return generation_ != generation || aborted_;
    });
    if (generation_ != generation) return absl::OkStatus();
    aborted_ = true;
    cv_.notify_all();
    return absl::UnavailableError(released ? "HostCollectiveGroup: aborted"
                                           : "HostCollectiveGroup: a rank did not come in time");
  }

  // Every rank's `mine` into `all` (rank-major, size() entries).
  absl::Status Exchange(int rank, std::vector<uint8_t> mine,
                        std::vector<std::vector<uint8_t>>* all) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      slots_[static_cast<size_t>(rank)] = std::move(mine);
    }
    if (absl::Status s = Barrier(); !s.ok()) return s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      *all = slots_;
      if (rank == 0) ++collectives_;
    }
    // Nobody overwrites a slot for the next call before every rank has read this one.
    return Barrier();
  }

  static absl::Status Download(std::vector<uint8_t>* host, const void* device, size_t bytes,
                               kernels::cuda::Stream stream) {
    host->resize(bytes);
    if (absl::Status s = kernels::cuda::SynchronizeStream(stream); !s.ok()) return s;
    if (absl::Status s = kernels::cuda::CopyDeviceToHostAsync(host->data(), device, bytes, stream);
        !s.ok()) {
      return s;
    }
    return kernels::cuda::SynchronizeStream(stream);
  }
  static absl::Status Upload(void* device, const std::vector<uint8_t>& host,
                             kernels::cuda::Stream stream) {
    if (absl::Status s = kernels::cuda::CopyHostToDeviceAsync(device, host.data(), host.size(),
                                                              stream);
        !s.ok()) {
      return s;
    }
    return kernels::cuda::SynchronizeStream(stream);
  }

  // A local failure aborts the group, so that the other ranks do not wait for this one.
  absl::Status Failed(absl::Status s) {
    Abort();
    return s;
  }

  absl::Status AllReduceSum(int rank, void* data, size_t count, DeviceDType dtype,
                            kernels::cuda::Stream stream) {
    if (count == 0) return absl::OkStatus();
    const bool bf16 = dtype == DeviceDType::kBf16;
    const size_t elem = bf16 ? 2 : 4;
    std::vector<uint8_t> mine;
    if (absl::Status s = Download(&mine, data, count * elem, stream); !s.ok()) return Failed(s);
    std::vector<std::vector<uint8_t>> all;
    if (absl::Status s = Exchange(rank, std::move(mine), &all); !s.ok()) return s;
    for (const std::vector<uint8_t>& part : all) {
      if (part.size() != count * elem) {
        return Failed(absl::InvalidArgumentError(absl::StrCat(
            "HostCollectiveGroup: all-reduce of ", count * elem, " bytes on rank ", rank,
            ", another rank gave ", part.size())));
      }
    }
    std::vector<uint8_t> sum(count * elem);
    for (size_t i = 0; i < count; ++i) {
      float acc = 0.0f;
      for (int r = 0; r < size_; ++r) {
        const uint8_t* p = all[static_cast<size_t>(r)].data() + i * elem;
        float v;
        if (bf16) {
          uint16_t b;
          std::memcpy(&b, p, 2);
          v = Bf16ToF32(b);
        } else {
          std::memcpy(&v, p, 4);
        }
        acc = r == 0 ? v : acc + v;
      }
      if (bf16) {
        const uint16_t b = F32ToBf16(acc);
        std::memcpy(sum.data() + i * 2, &b, 2);
      } else {
        std::memcpy(sum.data() + i * 4, &acc, 4);
      }
    }
    if (absl::Status s = Upload(data, sum, stream); !s.ok()) return Failed(s);
    return absl::OkStatus();
  }

  absl::Status AllGather(int rank, const void* send, size_t bytes, void* recv,
                         kernels::cuda::Stream stream) {
    if (bytes == 0) return absl::OkStatus();
    std::vector<uint8_t> mine;
    if (absl::Status s = Download(&mine, send, bytes, stream); !s.ok()) return Failed(s);
    std::vector<std::vector<uint8_t>> all;
    if (absl::Status s = Exchange(rank, std::move(mine), &all); !s.ok()) return s;
    std::vector<uint8_t> joined;
    joined.reserve(bytes * static_cast<size_t>(size_));
    for (const std::vector<uint8_t>& part : all) {
      if (part.size() != bytes) {
        return Failed(absl::InvalidArgumentError(absl::StrCat(
            "HostCollectiveGroup: all-gather of ", bytes, " bytes on rank ", rank,
            ", another rank gave ", part.size())));
      }
      joined.insert(joined.end(), part.begin(), part.end());
    }
    if (absl::Status s = Upload(recv, joined, stream); !s.ok()) return Failed(s);
    return absl::OkStatus();
  }

  const int size_;
  const std::chrono::seconds timeout_;
  std::vector<std::unique_ptr<End>> ends_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<uint8_t>> slots_;  // each rank's input of the current collective
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  int collectives_ = 0;
};

}  // namespace tpserve::testing
