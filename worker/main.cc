// tpserve-worker: one rank of a model replica. Launched as one mpirun job of TP x PP ranks.
// Until the coordinator link exists, the leader can generate stand-alone from token ids
// (--prompt_tokens or a random --prompt_len) and print tokens and tokens/s.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "comm/mpi/mpi_communicator.h"
#include "common/logging.h"
#include "common/status.h"
#include "worker/engine.h"
#include "model/fingerprint.h"
#include "worker/leader_link.h"
#include "worker/local_generate.h"

ABSL_FLAG(std::string, model, "", "model folder (config.json + safetensors)");
ABSL_FLAG(int, tp, 1, "tensor-parallel ranks per stage");
ABSL_FLAG(int, pp, 1, "pipeline stages");
ABSL_FLAG(std::string, layers_per_stage, "", "explicit layer counts per stage, e.g. 2,1,1");
ABSL_FLAG(int, kv_block_size, 16, "tokens per KV block");
ABSL_FLAG(int, kv_blocks, 0,
          "KV blocks per rank (0 = what the backend fits: cpu four full contexts, cuda "
          "--gpu_memory_fraction of the GPU after weights)");
ABSL_FLAG(std::string, backend, "cpu", "compute backend: cpu, cuda or auto (cuda if every rank sees a GPU and the CUDA kernels take the model)");
ABSL_FLAG(double, gpu_memory_fraction, 0.9, "cuda: share of each GPU for weights, scratch and KV cache");
ABSL_FLAG(bool, cuda_graphs, true, "cuda: replay decode steps from CUDA graphs");
ABSL_FLAG(int, nccl_timeout_s, 60, "cuda: seconds allowed for NCCL communicator set-up");
ABSL_FLAG(std::string, stage_handoff, "nccl",
          "cuda with --pp > 1: how stages hand over hidden states: nccl (GPU to GPU) or host "
          "(through host memory over MPI)");
ABSL_FLAG(std::string, prompt_tokens, "", "comma-separated prompt token ids");
ABSL_FLAG(int, prompt_len, 16, "random prompt length when --prompt_tokens is empty");
ABSL_FLAG(int, batch, 1, "sequences generated together");
ABSL_FLAG(int, max_new_tokens, 32, "tokens to generate per sequence");
ABSL_FLAG(float, temperature, 0.0f, "0 = greedy");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass");
ABSL_FLAG(int, top_k, 0, "top-k (0 = off)");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(std::string, coordinator, "", "coordinator worker-link address; empty = generate stand-alone");
ABSL_FLAG(std::string, name, "replica-0", "replica name reported to the coordinator");

namespace tpserve {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

// Serves the coordinator's plans until SIGINT/SIGTERM.
absl::Status ServeCluster(Engine& engine, const std::string& model) {
  ASSIGN_OR_RETURN(std::string fingerprint, ModelFingerprint(model));
  LeaderLinkOptions o;
  o.coordinator = absl::GetFlag(FLAGS_coordinator);
  o.name = absl::GetFlag(FLAGS_name);
  o.fingerprint = fingerprint;
  return ServeCoordinator(engine, o, g_stop);
}

absl::StatusOr<std::vector<int>> ParseInts(const std::string& text, const char* flag) {
  std::vector<int> out;
  if (text.empty()) return out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", part, "\" is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

absl::Status Generate(Engine& engine) {
  ASSIGN_OR_RETURN(std::vector<int> prompt, ParseInts(absl::GetFlag(FLAGS_prompt_tokens), "prompt_tokens"));
  const int batch = absl::GetFlag(FLAGS_batch);
  if (batch < 1) return absl::InvalidArgumentError("--batch must be >= 1");
  std::vector<LocalRequest> requests(batch);
  std::mt19937 rng(1234);
  for (int b = 0; b < batch; ++b) {
    LocalRequest& r = requests[b];
    if (!prompt.empty()) {
      r.prompt.assign(prompt.begin(), prompt.end());
    } else {
      std::uniform_int_distribution<int> pick(3, engine.config().vocab_size - 1);
      for (int i = 0; i < absl::GetFlag(FLAGS_prompt_len); ++i) r.prompt.push_back(pick(rng));
    }
    r.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    r.sampling.temperature = absl::GetFlag(FLAGS_temperature);
    r.sampling.top_p = absl::GetFlag(FLAGS_top_p);
    r.sampling.top_k = absl::GetFlag(FLAGS_top_k);
    r.sampling.seed = absl::GetFlag(FLAGS_seed) + b;
  }
  std::printf("prompt[0]: %s\n", absl::StrJoin(requests[0].prompt, " ").c_str());
  std::printf("tokens[0]:");
  ASSIGN_OR_RETURN(LocalOutput out, GenerateLocally(engine, requests, 0, [](size_t i, int32_t t) {
                     if (i == 0) {
                       std::printf(" %d", t);
                       std::fflush(stdout);
                     }
                   }));
  std::printf("\n");
  const int64_t prompt_tokens = static_cast<int64_t>(requests[0].prompt.size()) * batch;
  std::printf("prefill: %lld tokens in %.3f s = %.1f tokens/s\n", static_cast<long long>(prompt_tokens),
              out.prefill_seconds, prompt_tokens / out.prefill_seconds);
  if (out.decode_tokens > 0) {
    std::printf("decode:  %lld tokens in %.3f s = %.1f tokens/s (batch %d, %.2f ms/step)\n",
                static_cast<long long>(out.decode_tokens), out.decode_seconds,
                out.decode_tokens / out.decode_seconds, batch,
                1000.0 * out.decode_seconds * batch / out.decode_tokens);
  }
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  absl::StatusOr<std::unique_ptr<MpiRuntime>> mpi = MpiRuntime::Create(&argc, &argv);
  if (!mpi.ok()) {
    std::fprintf(stderr, "tpserve-worker: %s\n", std::string(mpi.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<Communicator> world = (*mpi)->World();
  SetLogTag(absl::StrCat("worker r", world->rank()));
  // Every rank catches the signal mpirun forwards; only the leader acts on it, and then
  // shuts the other ranks down through the step protocol.
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  EngineOptions options;
  options.tp = absl::GetFlag(FLAGS_tp);
  options.pp = absl::GetFlag(FLAGS_pp);
  options.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  options.kv_num_blocks = absl::GetFlag(FLAGS_kv_blocks);
  options.backend = absl::GetFlag(FLAGS_backend);
  options.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  options.nccl_timeout_s = absl::GetFlag(FLAGS_nccl_timeout_s);
  options.stage_handoff = absl::GetFlag(FLAGS_stage_handoff);  // checked by Engine::Create
  // One GPU per rank: the rank's index among the ranks on its node.
  absl::StatusOr<int> local_rank = NodeLocalRank();
  if (!local_rank.ok()) {
    LogError(local_rank.status().message());
    return 1;
  }
  options.cuda_device = *local_rank;
  absl::StatusOr<std::vector<int>> lps = ParseInts(absl::GetFlag(FLAGS_layers_per_stage), "layers_per_stage");
  if (!lps.ok()) {
    LogError(lps.status().message());
    return 2;
  }
  options.layers_per_stage = *lps;
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    LogError("--model is required");
    return 2;
  }

  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(model, options, *world);
  if (!engine.ok()) {
    LogError(absl::StrCat("cannot start: ", engine.status().ToString()));
    return 1;
  }
  LogInfo(absl::StrCat((*engine)->layout().Describe(), ", backend ",
                       std::string((*engine)->backend()), ", stage hand-off ",
                       std::string((*engine)->stage_handoff()), ", ",
                       (*engine)->weight_bytes() >> 20, " MiB of weights, ",
                       (*engine)->kv_num_blocks(), " KV blocks (",
                       (*engine)->kv_bytes() >> 20, " MiB)"));
  if (!(*engine)->is_leader()) {
    absl::Status st = (*engine)->Serve();
    if (!st.ok()) {
      LogError(st.ToString());
      world->Abort(1);
    }
    return 0;
  }
  absl::Status st = absl::GetFlag(FLAGS_coordinator).empty() ? Generate(**engine)
                                                             : ServeCluster(**engine, model);
  if (!st.ok()) LogError(st.ToString());
  absl::Status down = (*engine)->Shutdown();
  if (!down.ok()) {
    LogError(down.ToString());
    world->Abort(1);
  }
  return st.ok() ? 0 : 1;
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "mpirun -np TPxPP tpserve-worker --model DIR --tp T --pp P [--prompt_tokens 1,2,3]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  int n = static_cast<int>(rest.size());
  char** args = rest.data();
  return tpserve::Run(n, args);
}
