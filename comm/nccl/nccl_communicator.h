// NCCL implementation of DeviceCommunicator (layer: comm). A plain C++ header: no NCCL or CUDA
// type appears here, so code above comm/ never includes nccl.h, and the header is the same
// whether or not the build found NCCL (CMake's TPSERVE_HAVE_NCCL; without it every
// CreateNcclCommunicator fails with FailedPrecondition). The NCCL communicator is
// bootstrapped over a host Communicator (MPI in the worker). Threading: as DeviceCommunicator
// (one thread at a time per communicator); CreateNcclCommunicator is collective.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/communicator.h"
#include "comm/device_communicator.h"

namespace tpserve {

// True when this build holds the NCCL implementation, false in a build without NCCL.
bool NcclAvailable();

// Creates an NCCL communicator over the ranks of `group`: same ranks, same order (NCCL rank r
// is group rank r), each rank on its CUDA device `device` (its own index; one device per rank,
// NCCL refuses two ranks on one GPU). Collective over `group`: every rank must call it, in the
// same order relative to its other collectives on `group`, whatever failed before locally.
// Steps: rank 0 makes the NCCL unique id and broadcasts it over `group`; every rank selects
// `device` (the calling thread's current CUDA device stays `device` afterwards); the ranks
// agree on these local steps (AgreeOnStatus), then each starts a non-blocking NCCL init and
// waits for it at most `init_timeout`; a rank whose init did not finish by then aborts it.
// The ranks agree again, then split a blocking communicator off the non-blocking one (for the
// collectives: see nccl_communicator.cc), bounded the same way, and agree a last time, so
// every rank returns the same verdict (an error's message is prefixed "rank R: " with the
// lowest failing rank):
//   InvalidArgument     device < 0, a device this process cannot see, or init_timeout <= 0;
//   FailedPrecondition  NCCL_COMM_BLOCKING or NCCL_COMM_SPLIT_SHARE_RESOURCES is set (NCCL
//                       would let them override the settings this relies on), or tpserve
//                       was built without NCCL (no collective call is made then);
//   Unavailable         no CUDA driver or device, NCCL or a peer failed during init, or
//                       `group` itself failed;
//   DeadlineExceeded    some rank's init or split did not finish within `init_timeout` (a
//                       rank never joined, or is stuck): "NCCL init of rank 1 of 2 on device
//                       0 did not finish within 30s: ...";
//   Internal            NCCL disagrees with `group` on rank or size (a bug).
// On error no rank keeps a communicator (ranks whose own init succeeded abort theirs).
// The returned communicator is blocking: each call enqueues on the calling thread and returns
// (the first call of a kind may also connect to the peers, as NCCL connects on first use);
// the GPU waits for the peers. A failed call aborts it (later calls: Unavailable). Its
// destructor flushes its work (the caller has synchronised the streams it used). Works for a
// group of one rank.
[[nodiscard]] absl::StatusOr<std::unique_ptr<DeviceCommunicator>> CreateNcclCommunicator(
    Communicator& group, int device, absl::Duration init_timeout);

}  // namespace tpserve
