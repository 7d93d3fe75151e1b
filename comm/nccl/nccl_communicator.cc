// NCCL behind DeviceCommunicator. Set-up runs on non-blocking communicators so that no NCCL
// call of it can hold the host forever: the init and a split are polled with
// ncclCommGetAsyncError against a deadline, and one that failed or ran out of time is aborted
// (ncclCommAbort), not destroyed. The collectives then run on a BLOCKING child split off the
// set-up communicator: NCCL (2.19 and later) ends every group of a non-blocking communicator,
// so every single collective, on a thread of its own and answers ncclInProgress; a blocking
// one enqueues on the calling thread, as CUDA graph capture and an eager step of ~100
// all-reduces want. Enqueueing never waits for a peer; the GPU does. A failed communicator is
// aborted at once, so that peers blocked in a collective with it see a remote error.
#include "comm/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "comm/nccl/nccl_status.h"
#include "common/status.h"

namespace tpserve {
namespace {

// Pause between polls of a set-up step (an init or a split takes tens of milliseconds to
// seconds).
constexpr absl::Duration kInitPoll = absl::Milliseconds(1);

// Polls `comm` until its state is no longer ncclInProgress or `deadline` has passed. Returns
// that state (ncclInProgress when the deadline passed first), or the error of
// ncclCommGetAsyncError itself.
ncclResult_t WaitWhileInProgress(ncclComm_t comm, absl::Time deadline, absl::Duration pause) {
  for (;;) {
    ncclResult_t state = ncclInProgress;
    const ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
    if (rc != ncclSuccess) return rc;
    if (state != ncclInProgress) return state;
    if (absl::Now() >= deadline) return ncclInProgress;
    absl::SleepFor(pause);
  }
}

cudaStream_t AsCudaStream(void* stream) { return static_cast<cudaStream_t>(stream); }

class NcclCommunicator final : public DeviceCommunicator {
 public:
  NcclCommunicator(ncclComm_t comm, int rank, int size, int device)
      : comm_(comm), rank_(rank), size_(size), device_(device) {}

  // Finalize flushes the outstanding work, then destroy only frees; a failed flush is cut
  // short by an abort. The owner synchronises its streams first (CudaRankCompute does): work
  // still queued on them would be waited for here, as long as it takes.
  ~NcclCommunicator() override {
    if (comm_ == nullptr) return;
    if (ncclCommFinalize(comm_) == ncclSuccess) {
      (void)ncclCommDestroy(comm_);
    } else {
      (void)ncclCommAbort(comm_);
    }
  }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(void* data, size_t count, DeviceDType dtype, void* stream) override {
    if (data == nullptr && count > 0) return Invalid("all-reduce", "null data");
    ncclDataType_t type = ncclFloat32;
    switch (dtype) {
      case DeviceDType::kBf16:
        type = ncclBfloat16;
        break;
      case DeviceDType::kF32:
        type = ncclFloat32;
        break;
      default:
        return Invalid("all-reduce", absl::StrCat("unknown DeviceDType ", static_cast<int>(dtype)));
    }
    RETURN_IF_ERROR(Usable());
    if (count == 0) return absl::OkStatus();
    return Finish(ncclAllReduce(data, data, count, type, ncclSum, comm_, AsCudaStream(stream)),
                  "all-reduce");
  }

  absl::Status AllGather(const void* send, size_t bytes, void* recv, void* stream) override {
    if ((send == nullptr || recv == nullptr) && bytes > 0) {
      return Invalid("all-gather", "null send or receive buffer");
    }
    RETURN_IF_ERROR(Usable());
    if (bytes == 0) return absl::OkStatus();
    return Finish(ncclAllGather(send, recv, bytes, ncclUint8, comm_, AsCudaStream(stream)),
                  "all-gather");
  }

  absl::Status Send(const void* data, size_t bytes, int peer, void* stream) override {
    RETURN_IF_ERROR(CheckPointToPoint("send", data, bytes, peer));
    RETURN_IF_ERROR(Usable());
    // Both sides skip an empty message alike (they pass the same size), so nothing is left
    // unmatched.
    if (bytes == 0) return absl::OkStatus();
    return Finish(ncclSend(data, bytes, ncclUint8, peer, comm_, AsCudaStream(stream)), "send");
  }

  absl::Status Recv(void* data, size_t bytes, int peer, void* stream) override {
    RETURN_IF_ERROR(CheckPointToPoint("recv", data, bytes, peer));
    RETURN_IF_ERROR(Usable());
    if (bytes == 0) return absl::OkStatus();
    return Finish(ncclRecv(data, bytes, ncclUint8, peer, comm_, AsCudaStream(stream)), "recv");
  }

 private:
  // " (rank 0 of 2, device 0)", for messages.
  std::string Where() const {
    return absl::StrCat(" (rank ", rank_, " of ", size_, ", device ", device_, ")");
  }

  absl::Status Invalid(absl::string_view what, absl::string_view why) const {
    return absl::InvalidArgumentError(absl::StrCat("NCCL ", what, Where(), ": ", why));
  }

  absl::Status CheckPointToPoint(absl::string_view what, const void* data, size_t bytes,
                                 int peer) const {
    if (data == nullptr && bytes > 0) return Invalid(what, "null buffer");
    if (peer < 0 || peer >= size_) {
      return Invalid(what, absl::StrCat("peer ", peer, " is not a rank of this group"));
    }
    if (peer == rank_) return Invalid(what, absl::StrCat("peer ", peer, " is this rank"));
    return absl::OkStatus();
  }

  absl::Status Usable() const {
    if (comm_ != nullptr) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("NCCL communicator", Where(),
                     " was aborted after an earlier failure: ", first_error_.message()));
  }

  // Completes a call that NCCL answered with `rc`, then reports the communicator's state,
  // which carries asynchronous errors of earlier work (a peer or the network failed).
  absl::Status Finish(ncclResult_t rc, absl::string_view what) {
    if (rc == ncclSuccess) {
      ncclResult_t state = ncclSuccess;
      rc = ncclCommGetAsyncError(comm_, &state);
      if (rc == ncclSuccess) rc = state;
    }
    if (rc == ncclSuccess) return absl::OkStatus();
    // Any failure aborts, a call NCCL rejected (ncclInvalidArgument / ncclInvalidUsage) too:
    // the peers may have made the matching call and would wait for this rank. The status
    // keeps NCCL's code (InvalidArgument for a rejection; ncclInProgress, which a blocking
    // communicator never answers, maps to Internal); later calls are Unavailable. (This
    // class's own argument checks come before NCCL and leave the communicator usable.)
    return Fail(NcclResultToStatus(rc, absl::StrCat("NCCL ", what, Where())));
  }

  absl::Status Fail(absl::Status status) {
    first_error_ = status;
    (void)ncclCommAbort(comm_);
    comm_ = nullptr;
    return status;
  }

  ncclComm_t comm_;  // null once aborted
  const int rank_;
  const int size_;
  const int device_;
  absl::Status first_error_;  // why comm_ was aborted
};

// The local steps before an init: the environment, the arguments, the device.
absl::Status PrepareRank(const std::string& who, int device, absl::Duration init_timeout) {
  // NCCL lets these variables override a communicator's config; this file sets both fields
  // itself (a non-blocking set-up, then a blocking child that shares nothing with it).
  for (const char* name : {"NCCL_COMM_BLOCKING", "NCCL_COMM_SPLIT_SHARE_RESOURCES"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') {
      return absl::FailedPreconditionError(absl::StrCat(
          "NCCL init of ", who, ": ", name, "=", value, " is set; tpserve chooses that setting "
          "itself (non-blocking set-up, blocking collectives): unset it"));
    }
  }
  if (device < 0) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL init of ", who, ": negative device"));
  }
  if (init_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL init of ", who, ": the init timeout ",
                                                   absl::FormatDuration(init_timeout),
                                                   " is not positive"));
  }
  const cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();  // not sticky: keep it from resurfacing in a later call
  return CudaResultToStatus(err,
                            absl::StrCat("NCCL init of ", who, ": cudaSetDevice(", device, ")"));
}

// Starts the non-blocking init of this rank and waits for it until `timeout` has passed.
// On success `*out` owns the communicator; on failure no communicator is left behind.
absl::Status InitRank(const ncclUniqueId& id, int rank, int size, const std::string& who,
                      absl::Duration timeout, ncclComm_t* out) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const absl::Time deadline = absl::Now() + timeout;
  ncclResult_t rc = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  if (rc != ncclSuccess && rc != ncclInProgress) {
    // Refused before the background init started: NCCL has released the communicator.
    return NcclResultToStatus(rc, absl::StrCat("NCCL init of ", who, " failed"));
  }
  if (comm == nullptr) {
    return absl::InternalError(
        absl::StrCat("NCCL init of ", who, ": ncclCommInitRankConfig returned no communicator"));
  }
  rc = WaitWhileInProgress(comm, deadline, kInitPoll);
  if (rc == ncclInProgress) {
    (void)ncclCommAbort(comm);
    return absl::DeadlineExceededError(absl::StrCat(
        "NCCL init of ", who, " did not finish within ", absl::FormatDuration(timeout),
        ": a rank of the group did not join (it failed or is stuck before its init, or the "
        "network between the ranks is blocked); the communicator was aborted"));
  }
  if (rc != ncclSuccess) {
    absl::Status status = NcclResultToStatus(rc, absl::StrCat("NCCL init of ", who, " failed"));
    (void)ncclCommAbort(comm);
    return status;
  }
  *out = comm;
  return absl::OkStatus();
}

// Splits the blocking communicator for the collectives off `parent` (same ranks, same order),
// waiting for it at most `timeout`, then releases `parent`. On success `*out` owns the child;
// on failure `parent` is aborted and no communicator is left behind.
absl::Status SplitBlocking(ncclComm_t parent, int rank, int size, const std::string& who,
                           absl::Duration timeout, ncclComm_t* out) {
  const absl::Time deadline = absl::Now() + timeout;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 1;
  ncclComm_t child = nullptr;
  // The split is a job of the parent: non-blocking like it, its outcome becomes the parent's
  // state, and NCCL stores the child only once it is complete.
  ncclResult_t rc = ncclCommSplit(parent, /*color=*/0, /*key=*/rank, &child, &config);
  if (rc == ncclSuccess || rc == ncclInProgress) {
    rc = WaitWhileInProgress(parent, deadline, kInitPoll);
  }
  absl::Status status = absl::OkStatus();
  if (rc == ncclInProgress) {
    status = absl::DeadlineExceededError(absl::StrCat(
        "NCCL split of ", who, " did not finish within ", absl::FormatDuration(timeout),
        ": a rank of the group failed or is stuck; the communicators were aborted"));
  } else if (rc != ncclSuccess) {
    status = NcclResultToStatus(rc, absl::StrCat("NCCL split of ", who, " failed"));
  } else if (child == nullptr) {
    status = absl::InternalError(absl::StrCat("NCCL split of ", who, " returned no communicator"));
  } else {
    int nccl_rank = -1;
    int nccl_size = -1;
    if (ncclCommUserRank(child, &nccl_rank) != ncclSuccess ||
        ncclCommCount(child, &nccl_size) != ncclSuccess || nccl_rank != rank || nccl_size != size) {
      status = absl::InternalError(absl::StrCat("NCCL split of ", who, ": NCCL reports rank ",
                                                nccl_rank, " of ", nccl_size));
    }
  }
  if (!status.ok()) {
    // The parent first: its abort waits for the split's thread, which stores the child (also
    // a failed one) as it ends; only then is `child` final.
    (void)ncclCommAbort(parent);
    if (child != nullptr) (void)ncclCommAbort(child);
    return status;
  }
  // The parent's work is done; its resources go (the child shares none: splitShare is off).
  rc = ncclCommFinalize(parent);
  if (rc == ncclSuccess || rc == ncclInProgress) {
    rc = WaitWhileInProgress(parent, deadline, kInitPoll);
  }
  if (rc == ncclSuccess) {
    (void)ncclCommDestroy(parent);
  } else {
    (void)ncclCommAbort(parent);
  }
  *out = child;
  return absl::OkStatus();
}

}  // namespace

bool NcclAvailable() { return true; }

absl::StatusOr<std::unique_ptr<DeviceCommunicator>> CreateNcclCommunicator(
    Communicator& group, int device, absl::Duration init_timeout) {
  const int rank = group.rank();
  const int size = group.size();
  const std::string who = absl::StrCat("rank ", rank, " of ", size, " on device ", device);

  // 1. Local preparation. Its outcome is agreed before the NCCL init, so that a rank failing
  //    here fails every rank at once instead of leaving the others waiting for it until the
  //    deadline. Every rank takes part in the broadcast whatever happened locally.
  absl::Status prep = PrepareRank(who, device, init_timeout);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank == 0 && prep.ok()) {
    prep = NcclResultToStatus(ncclGetUniqueId(&id),
                              absl::StrCat("NCCL init of ", who, ": ncclGetUniqueId"));
  }
  RETURN_IF_ERROR(group.Broadcast(&id, sizeof id, /*root=*/0));
  RETURN_IF_ERROR(AgreeOnStatus(group, prep));

  // 2. The NCCL init proper, then the split, each bounded by `init_timeout` on every rank.
  //    One verdict for all after each: a rank whose step succeeded while another's failed
  //    drops its communicator, and none enters the split alone.
  ncclComm_t setup = nullptr;
  absl::Status agreed = AgreeOnStatus(group, InitRank(id, rank, size, who, init_timeout, &setup));
  if (!agreed.ok()) {
    if (setup != nullptr) (void)ncclCommAbort(setup);
    return agreed;
  }
  ncclComm_t comm = nullptr;
  agreed = AgreeOnStatus(group, SplitBlocking(setup, rank, size, who, init_timeout, &comm));
  if (!agreed.ok()) {
    if (comm != nullptr) (void)ncclCommAbort(comm);
    return agreed;
  }
  return std::unique_ptr<DeviceCommunicator>(new NcclCommunicator(comm, rank, size, device));
}

}  // namespace tpserve
