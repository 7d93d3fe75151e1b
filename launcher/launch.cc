// tpserve-launch CONFIG.yaml: starts the coordinator and one mpirun job per replica from a
// cluster config, waits until every replica serves, restarts replicas whose job dies, and on
// SIGINT/SIGTERM stops everything (workers first, then the coordinator).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "grpcpp/grpcpp.h"
#include "launcher/cluster_config.h"
#include "launcher/replica_command.h"
#include "tpserve/v1/inference.grpc.pb.h"

namespace tpserve {
namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

using Clock = std::chrono::steady_clock;

// Starts `argv` in a new process group (so a signal reaches the whole job); -1 on failure.
pid_t Spawn(const std::vector<std::string>& argv) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  setpgid(0, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  std::fprintf(stderr, "tpserve-launch: cannot run %s\n", args[0]);
  _exit(127);
}

// Replicas the coordinator reports as serving.
int ServingReplicas(v1::Inference::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  v1::ClusterStatus status;
  if (!stub.GetClusterStatus(&ctx, v1::GetClusterStatusRequest(), &status).ok()) return -1;
  int serving = 0;
  for (const v1::ReplicaStatus& r : status.replicas()) serving += r.state() == v1::REPLICA_STATE_SERVING;
  return serving;
}

void StopAll(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) {
    if (p > 0) killpg(p, SIGTERM);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  for (pid_t p : pids) {
    while (p > 0 && waitpid(p, nullptr, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        killpg(p, SIGKILL);
        waitpid(p, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

int Run(int argc, char** argv) {
  SetLogTag("launch");
  if (argc < 2) {
    std::fprintf(stderr, "usage: tpserve-launch CONFIG.yaml [--bin_dir BUILD_DIR]\n");
    return 2;
  }
  absl::StatusOr<ClusterConfig> config = LoadClusterConfig(argv[1]);
  if (!config.ok()) {
    LogError(config.status().ToString());
    return 2;
  }
  std::string bin_dir = std::filesystem::canonical("/proc/self/exe").parent_path().parent_path();
  if (argc >= 4 && std::string(argv[2]) == "--bin_dir") bin_dir = argv[3];
  const std::string coordinator = bin_dir + "/coordinator/tpserve-coordinator";
  const std::string worker = bin_dir + "/worker/tpserve-worker";
  for (const std::string& b : {coordinator, worker}) {
    if (access(b.c_str(), X_OK) != 0) {
      LogError(absl::StrCat("cannot find ", b, " (build tpserve first, or pass --bin_dir)"));
      return 2;
    }
  }
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  const ClusterConfig& c = *config;
  std::vector<std::string> coord_cmd = {
      coordinator, "--model", c.model, "--listen", c.coordinator_listen, "--worker_listen",
      c.coordinator_worker_listen, "--max_num_seqs", std::to_string(c.scheduler.max_num_seqs),
      "--max_batch_tokens", std::to_string(c.scheduler.max_batch_tokens)};
  coord_cmd.insert(coord_cmd.end(), c.coordinator_args.begin(), c.coordinator_args.end());
  const pid_t coord = Spawn(coord_cmd);
  std::map<std::string, pid_t> jobs;
  std::map<std::string, int> restarts;
  for (const ReplicaConfig& r : c.replicas) jobs[r.name] = Spawn(ReplicaCommand(c, r, worker));

  auto channel = grpc::CreateChannel(c.coordinator_listen, grpc::InsecureChannelCredentials());
  auto stub = v1::Inference::NewStub(channel);
  bool ready = false;
  const auto start = Clock::now();
  int rc = 0;
  while (!g_stop) {
    if (waitpid(coord, nullptr, WNOHANG) == coord) {
      LogError("the coordinator exited; stopping the cluster");
      rc = 1;
      break;
    }
    for (const ReplicaConfig& r : c.replicas) {
      pid_t& pid = jobs[r.name];
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) != pid) continue;
      if (++restarts[r.name] > 5) {
        LogError(absl::StrCat("replica \"", r.name, "\" failed 5 times in a row; not restarting it"));
        pid = -1;
        continue;
      }
      LogError(absl::StrCat("replica \"", r.name, "\" exited (status ", status, "); restarting it"));
      std::this_thread::sleep_for(std::chrono::seconds(1));
      pid = Spawn(ReplicaCommand(c, r, worker));
    }
    if (!ready && ServingReplicas(*stub) == static_cast<int>(c.replicas.size())) {
      ready = true;
      restarts.clear();
      LogInfo(absl::StrCat("cluster ready: ", c.replicas.size(), " replica(s) serving on ",
                           c.coordinator_listen, " after ",
                           std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(),
                           " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  LogInfo("stopping the cluster");
  std::vector<pid_t> order;
  for (auto& [name, pid] : jobs) order.push_back(pid);
  StopAll(order);
  StopAll({coord});
  return rc;
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) { return tpserve::Run(argc, argv); }
