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

}  // namespace tpserve
