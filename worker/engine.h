// The step executor of one rank of a worker job (layer: worker). Every rank of the job builds
// an Engine; world rank 0 (the leader) calls Step for each plan and Shutdown at the end, the
// other ranks call Serve, which executes steps until the leader shuts down. Data flow: the
// leader broadcasts the plan in stage 0's TP group; stage s sends plan and hidden states to
// stage s + 1 rank to rank; the last stage's tensor rank 0 samples and returns the result to
// the leader. Plans and results always travel over MPI (SendAsync: a stage does not wait for
// the next one to take them). Hidden states ([tokens, hidden] fp32) travel either
//  - "host": device (CUDA) -> host -> MPI SendAsync -> host -> device; the CPU backend's way;
//  - "nccl" (CUDA with PP > 1, EngineOptions::stage_handoff): GPU to GPU over an NCCL link
//    per pair of neighbouring ranks (s, t) - (s + 1, t), set up at Create over two
//    world.Split calls pairing stages (0,1), (2,3), ... and (1,2), (3,4), ...; stage s sends
//    the plan over MPI first, then its compute sends the hidden state on a stream of its own
//    and returns without waiting for stage s + 1 to receive it (RankCompute::ConnectStages),
//    and stage s + 1 receives it on its compute stream before its step.
// The arithmetic of each rank is a RankCompute (worker/rank_compute.h) of the chosen backend,
// CPU or CUDA. Not thread-safe: one thread drives an Engine.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/device_communicator.h"
#include "kernels/ops.h"
#include "model/config.h"
#include "worker/layout.h"
#include "worker/rank_compute.h"
#include "common/step.h"

namespace tpserve {

struct EngineOptions {
  int tp = 1;
  int pp = 1;
  std::vector<int> layers_per_stage;  // empty = even split
  int64_t kv_block_size = 16;         // tokens per KV block
  int64_t kv_num_blocks = 0;  // 0 = what the backend fits (RankCompute::KvBlocksThatFit)
  // Compute backend: "cpu", "cuda" or "auto" (cuda when every rank sees a GPU whose kernels
  // take the model and layout, else cpu). All ranks of the job use the same one.
  std::string backend = "cpu";
  int cuda_device = 0;               // this rank's GPU (main.cc: its node-local rank)
  double gpu_memory_fraction = 0.9;  // share of the GPU for weights, scratch and KV cache
  bool cuda_graphs = true;           // replay decode steps from captured CUDA graphs
  int nccl_timeout_s = 60;           // NCCL communicator set-up limit
  // CUDA with PP > 1: how stages hand over hidden states, "nccl" (GPU to GPU) or "host"
  // (through host memory over MPI). Ignored by the CPU backend; the same on all ranks.
  std::string stage_handoff = "nccl";
};

class Engine {
 public:
  // Collective over `world` (which must outlive the Engine): reads config.json, checks the
  // layout, loads this rank's weight slices and allocates its KV cache. If any rank fails,
  // every rank returns the same error, prefixed with the failing rank ("rank 2: ...").
  // `model_dir` is always a folder. With a config.json it is a Hugging Face folder
  // (safetensors weights). Without one, if it holds exactly one *.gguf file, that llama.cpp
  // file is the model: config from its metadata (ModelConfigFromGguf), weights dequantised to
  // F32 at load, each rank reading only its rows (see LoadShardWeights); several *.gguf files
  // without a config.json are InvalidArgument (FindModelGguf).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const std::string& model_dir,
                                                        const EngineOptions& options,
                                                        Communicator& world);

  bool is_leader() const { return layout_.rank == 0; }
  const Layout& layout() const { return layout_; }
  const ModelConfig& config() const { return config_; }
  std::string_view backend() const { return compute_->backend(); }
  uint64_t weight_bytes() const { return compute_->weight_bytes(); }
  int64_t kv_num_blocks() const { return compute_->kv_num_blocks(); }
  uint64_t kv_bytes() const { return compute_->kv_bytes(); }
  int64_t kv_block_size() const { return kv_block_size_; }
  // How hidden states reach the next stage: "nccl", "host", or "none" with one stage.
  std::string_view stage_handoff() const;

  // Leader only. Checks the plan (InvalidArgument naming the sequence and field; nothing runs)
  // and executes it on all ranks. Unavailable if a transfer between ranks fails.
  absl::StatusOr<StepResult> Step(const StepPlan& plan);

  // Pipelined form of Step, leader only. Submit checks the plan, runs the first stage's part
  // and returns while later stages work on it, so that with PP stages up to PP plans (over
  // disjoint sequences) can be in flight. Collect returns the oldest submitted plan's result,
  // waiting for it; TryCollect returns it only if it is ready. Results come in submit order.
  absl::Status Submit(const StepPlan& plan);
  absl::StatusOr<StepResult> Collect();
  absl::StatusOr<std::optional<StepResult>> TryCollect();
  int in_flight() const { return in_flight_; }
  // Leader only: makes every other rank's Serve return OK.
  absl::Status Shutdown();
  // Non-leader ranks: executes plans until shutdown. Returns transport errors.
  absl::Status Serve();

 private:
  // This rank's NCCL links to its counterparts on the neighbouring stages (null where there
  // is no such stage). Peers inside a link: the lower stage is rank 0, the higher rank 1.
  struct StageLinks {
    std::unique_ptr<DeviceCommunicator> from_previous, to_next;
  };

  Engine(ModelConfig config, Layout layout, int64_t kv_block_size, Communicator& world,
         std::unique_ptr<Communicator> tp_group, std::unique_ptr<DeviceCommunicator> device_group,
         StageLinks links, bool device_handoff, std::unique_ptr<RankCompute> compute);
  static absl::StatusOr<StageLinks> CreateStageLinks(Communicator& world, const Layout& layout,
                                                     const EngineOptions& options);

  absl::Status ValidatePlan(const StepPlan& plan) const;
  // Runs one plan on this rank; fills `result` on the last stage's tensor rank 0.
  absl::Status Execute(const std::vector<uint8_t>& plan_bytes, const StepPlan& plan,
                       StepResult* result);
  absl::Status ComputeLogits(const StepPlan& plan, StepResult* result);

  ModelConfig config_;
  Layout layout_;
  int64_t kv_block_size_;
  Communicator& world_;
  std::unique_ptr<Communicator> tp_group_;
  std::unique_ptr<DeviceCommunicator> device_group_;  // NCCL over tp_group_ (CUDA, TP > 1)
  StageLinks links_;             // stage_handoff "nccl" (CUDA, PP > 1); else both null
  bool device_handoff_ = false;  // hidden states go over links_, not through the host
  std::unique_ptr<RankCompute> compute_;  // destroyed before the groups and links it uses

  // Per-step scratch, grown as needed and reused.
  std::vector<int32_t> token_ids_, positions_;
  std::vector<int64_t> slots_;
  std::vector<kernels::AttentionSeq> attn_seqs_;
  std::vector<float> x_, logits_, sample_scratch_;
  std::vector<std::vector<int32_t>> seen_;
  std::vector<SampledToken> sampled_;

  // Leader: results of submitted plans not yet collected. With one stage they are complete at
  // submit time; otherwise they arrive from the last stage's tensor rank 0.
  std::deque<StepResult> local_results_;
  int in_flight_ = 0;
};

}  // namespace tpserve
