// The worker leader's connection to the coordinator (layer: worker). Dials, registers the
// replica, executes the step plans it receives on the Engine and returns the results; sends
// a heartbeat every second; re-dials after the coordinator restarts. Runs on the leader's
// main thread (the heartbeat thread only writes heartbeats).
#pragma once

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "worker/engine.h"

namespace tpserve {

struct LeaderLinkOptions {
  std::string coordinator;   // host:port of the coordinator's worker link
  std::string name;          // replica name
  std::string fingerprint;   // model fingerprint (model/fingerprint.h)
};

// Serves until `stop` becomes true. Returns FailedPrecondition when the coordinator refuses
// the replica (a different model or a taken name): re-dialing would not help. Transport
// failures between ranks are returned as they are (the job cannot go on).
absl::Status ServeCoordinator(Engine& engine, const LeaderLinkOptions& options,
                              const std::atomic<bool>& stop);

}  // namespace tpserve
