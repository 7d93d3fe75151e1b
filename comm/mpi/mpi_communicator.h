// MPI implementation of Communicator (layer: comm). No MPI type appears in this header, so
// code above comm/ never includes mpi.h. Thread safety: as Communicator.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace tpserve {

// Owns MPI's lifetime for the process: initialises on Create, finalises on destruction.
class MpiRuntime {
 public:
  // Calls MPI_Init_thread (FUNNELED) once; Internal on failure. argc/argv may be null.
  static absl::StatusOr<std::unique_ptr<MpiRuntime>> Create(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // A communicator over all ranks of the job (MPI_COMM_WORLD), errors returned, not fatal.
  std::unique_ptr<Communicator> World() const;

 private:
  MpiRuntime() = default;
};

// Where this process sits on its node: its index among the ranks of the job (MPI_COMM_WORLD)
// that share its node (MPI_COMM_TYPE_SHARED), ordered by world rank, and how many there are.
// The worker picks its GPU as `local_rank` (one GPU per rank).
struct NodePlacement {
  int local_rank = 0;  // in [0, local_size)
  int local_size = 1;
};

// Computes this rank's NodePlacement. Collective over MPI_COMM_WORLD: every rank of the job
// must call it. FailedPrecondition when MPI is not initialised (no MpiRuntime alive);
// Unavailable when MPI fails (errors on MPI_COMM_WORLD abort the job unless World() was
// called first, which makes them returnable).
[[nodiscard]] absl::StatusOr<NodePlacement> NodeLocalPlacement();

// NodeLocalPlacement().local_rank, for callers that need only the rank. Collective likewise.
[[nodiscard]] absl::StatusOr<int> NodeLocalRank();

}  // namespace tpserve
