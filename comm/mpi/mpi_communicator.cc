#include "comm/mpi/mpi_communicator.h"

#include <mpi.h>

#include <climits>
#include <list>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace tpserve {
namespace {

// The one place MPI error codes turn into Status.
absl::Status FromMpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return absl::UnavailableError(absl::StrCat("MPI ", what, " failed: ", std::string(text, len)));
}

absl::Status CheckCount(size_t bytes) {
  if (bytes > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("message of ", bytes, " bytes exceeds 2 GiB"));
  }
  return absl::OkStatus();
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    (void)Reap(/*wait=*/true);
    if (owned_) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, size_t count) override {
    if (size_ == 1) return absl::OkStatus();
    if (auto s = CheckCount(count); !s.ok()) return s;
    return FromMpi(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                                 comm_),
                   "all-reduce");
  }

  absl::Status AllReduceMax(int32_t* data, size_t count) override {
    if (size_ == 1) return absl::OkStatus();
    if (auto s = CheckCount(count); !s.ok()) return s;
    return FromMpi(
        MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_INT32_T, MPI_MAX, comm_),
        "all-reduce");
  }

  absl::Status AllGather(const void* send, size_t bytes, void* recv) override {
    if (auto s = CheckCount(bytes); !s.ok()) return s;
    return FromMpi(MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv,
                                 static_cast<int>(bytes), MPI_BYTE, comm_),
                   "all-gather");
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (size_ == 1) return absl::OkStatus();
    if (auto s = CheckCount(bytes); !s.ok()) return s;
    return FromMpi(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_), "broadcast");
  }

  absl::Status Send(const void* data, size_t bytes, int peer, int tag) override {
    if (auto s = CheckCount(bytes); !s.ok()) return s;
    return FromMpi(MPI_Send(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_), "send");
  }

  absl::Status Recv(void* data, size_t bytes, int peer, int tag) override {
    if (auto s = CheckCount(bytes); !s.ok()) return s;
    MPI_Status st;
    int rc = MPI_Recv(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_, &st);
    if (rc != MPI_SUCCESS) return FromMpi(rc, "recv");
    int got = 0;
    MPI_Get_count(&st, MPI_BYTE, &got);
    if (static_cast<size_t>(got) != bytes) {
      return absl::InternalError(
          absl::StrCat("recv from rank ", peer, ": expected ", bytes, " bytes, got ", got));
    }
    return absl::OkStatus();
  }

  absl::Status SendAsync(std::vector<uint8_t> bytes, int peer, int tag) override {
    if (auto s = CheckCount(bytes.size()); !s.ok()) return s;
    if (auto s = Reap(/*wait=*/false); !s.ok()) return s;
    pending_.push_back({std::move(bytes), MPI_REQUEST_NULL});
    Pending& p = pending_.back();
    return FromMpi(MPI_Isend(p.bytes.data(), static_cast<int>(p.bytes.size()), MPI_BYTE, peer, tag,
                             comm_, &p.request),
                   "isend");
  }

  absl::Status FlushSends() override { return Reap(/*wait=*/true); }

  absl::StatusOr<bool> Probe(int peer, int tag) override {
    int flag = 0;
    int rc = MPI_Iprobe(peer, tag, comm_, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return FromMpi(rc, "iprobe");
    return flag != 0;
  }

  absl::StatusOr<std::vector<uint8_t>> RecvAny(int peer, int tag) override {
    MPI_Status st;
    int rc = MPI_Probe(peer, tag, comm_, &st);
    if (rc != MPI_SUCCESS) return FromMpi(rc, "probe");
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    std::vector<uint8_t> out(static_cast<size_t>(count));
    rc = MPI_Recv(out.data(), count, MPI_BYTE, peer, tag, comm_, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return FromMpi(rc, "recv");
    return out;
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    MPI_Comm sub;
    int rc = MPI_Comm_split(comm_, color, key, &sub);
    if (rc != MPI_SUCCESS) return FromMpi(rc, "comm split");
    return std::unique_ptr<Communicator>(new MpiCommunicator(sub, /*owned=*/true));
  }

  [[noreturn]] void Abort(int code) override {
    MPI_Abort(comm_, code);
    std::_Exit(code);
  }

 private:
  // Frees the buffers of completed asynchronous sends (all of them, waiting, when `wait`).
  absl::Status Reap(bool wait) {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      int rc = wait ? MPI_Wait(&it->request, MPI_STATUS_IGNORE)
                    : MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) return FromMpi(rc, "send completion");
      if (wait || done) {
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    return absl::OkStatus();
  }

  struct Pending {
    std::vector<uint8_t> bytes;
    MPI_Request request;
  };
  std::list<Pending> pending_;  // a list: MPI holds pointers into each element
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Create(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return absl::InternalError("MPI_Init_thread failed");
  }
  return std::unique_ptr<MpiRuntime>(new MpiRuntime());
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

std::unique_ptr<Communicator> MpiRuntime::World() const {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, /*owned=*/false);
}

absl::StatusOr<NodePlacement> NodeLocalPlacement() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return absl::FailedPreconditionError(
        "NodeLocalPlacement: MPI is not initialised (create an MpiRuntime first)");
  }
  int world_rank = 0;
  int rc = MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (rc != MPI_SUCCESS) return FromMpi(rc, "comm rank");
  // Keyed by world rank, so local ranks keep the world's order on each node.
  MPI_Comm node = MPI_COMM_NULL;
  rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL,
                           &node);
  if (rc != MPI_SUCCESS) return FromMpi(rc, "comm split by node");
  NodePlacement placement;
  rc = MPI_Comm_rank(node, &placement.local_rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(node, &placement.local_size);
  MPI_Comm_free(&node);
  if (rc != MPI_SUCCESS) return FromMpi(rc, "node comm rank/size");
  return placement;
}

absl::StatusOr<int> NodeLocalRank() {
  absl::StatusOr<NodePlacement> placement = NodeLocalPlacement();
  if (!placement.ok()) return placement.status();
  return placement->local_rank;
}

}  // namespace tpserve
