#include "worker/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/checkpoint.h"
#include "model/gguf.h"
#include "model/gguf_config.h"
#include "comm/nccl/nccl_communicator.h"
#include "worker/cpu_rank_compute.h"
#include "worker/cuda/cuda_rank_compute.h"
#include "worker/sampler.h"

namespace tpserve {
namespace {

enum Tag : int { kTagPlan = 1, kTagHidden = 2, kTagResult = 3 };

struct Loaded {
  ModelConfig config;
  Layout layout;
  ShardWeights weights;
};

absl::StatusOr<Loaded> LoadRank(const std::string& model_dir, const EngineOptions& o,
                                int world_size, int rank) {
  Loaded out;
  // A folder without config.json but with one *.gguf file is a llama.cpp model (engine.h).
  ASSIGN_OR_RETURN(std::optional<std::string> gguf_path, FindModelGguf(model_dir));
  std::unique_ptr<GgufModel> gguf;
  if (gguf_path.has_value()) {
    ASSIGN_OR_RETURN(gguf, GgufModel::Open(*gguf_path));
    ASSIGN_OR_RETURN(out.config, ModelConfigFromGguf(gguf->file(), *gguf_path));
  } else {
    ASSIGN_OR_RETURN(out.config, LoadModelConfig(model_dir));
  }
  ASSIGN_OR_RETURN(out.layout,
                   MakeLayout(out.config, o.tp, o.pp, world_size, rank, o.layers_per_stage));
  if (o.kv_block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_block_size ", o.kv_block_size, " < 1"));
  }
  absl::StatusOr<ShardWeights> weights;
  std::unique_ptr<Checkpoint> ckpt;
  if (gguf != nullptr) {
    weights = LoadShardWeights(*gguf, out.config, out.layout);
  } else {
    ASSIGN_OR_RETURN(ckpt, Checkpoint::Open(model_dir));
    weights = LoadShardWeights(*ckpt, out.config, out.layout);
  }
  if (!weights.ok()) {
    return absl::Status(weights.status().code(),
                        absl::StrCat(gguf_path.value_or(model_dir), ": ", weights.status().message()));
  }
  out.weights = std::move(*weights);
  // `ckpt` / `gguf` unmap the files on return: only this rank's copies of its slices stay resident.
  return out;
}

// The backend every rank of the job uses: all ranks must agree, since CPU ranks reduce over
// MPI and CUDA ranks over NCCL. "auto" is cuda only when every rank sees a GPU whose kernels
// take the model and layout (CudaBackendSupports), and NCCL where the layout needs it.
absl::StatusOr<std::string> ChooseBackend(const EngineOptions& o, const Loaded& loaded,
                                          Communicator& world) {
  const std::string& asked = o.backend;
  if (asked == "cpu") return asked;
  const int devices = CudaDeviceCount();
  if (asked == "cuda") {
    absl::Status local = absl::OkStatus();
    if (devices == 0) {
      local = absl::FailedPreconditionError(
          "--backend cuda: no CUDA device is visible to this rank (or tpserve was built "
          "without CUDA)");
    }
    RETURN_IF_ERROR(AgreeOnStatus(world, local));
    return asked;
  }
  const Layout& l = loaded.layout;
  const bool needs_nccl = l.tp > 1 || (l.pp > 1 && o.stage_handoff == "nccl");
  const bool usable = devices > 0 && CudaBackendSupports(loaded.config, l).ok() &&
                      (!needs_nccl || NcclAvailable());
  int32_t lacking = usable ? 0 : 1;
  RETURN_IF_ERROR(world.AllReduceMax(&lacking, 1));
  return std::string(lacking == 0 ? "cuda" : "cpu");
}

// The CUDA device this rank uses; every rank must check before any of them enters the
// collective NCCL set-up, or the others would wait there for it.
absl::Status CheckCudaDevice(const EngineOptions& o) {
  const int devices = CudaDeviceCount();
  if (o.cuda_device < 0 || o.cuda_device >= devices) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", o.cuda_device, " chosen for this rank, but ", devices,
                     " are visible (one GPU per rank, by node-local rank)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RankCompute>> CreateCompute(const std::string& backend,
                                                           Loaded& loaded, const EngineOptions& o,
                                                           Communicator& tp_group,
                                                           DeviceCommunicator* device_group) {
  if (backend == "cpu") {
    return CreateCpuRankCompute(loaded.config, loaded.layout, std::move(loaded.weights),
                                &tp_group);
  }
  CudaComputeOptions co;
  co.device = o.cuda_device;
  co.memory_fraction = o.gpu_memory_fraction;
  co.graphs = o.cuda_graphs;
  ASSIGN_OR_RETURN(std::unique_ptr<RankCompute> compute,
                   CreateCudaRankCompute(loaded.config, loaded.layout, loaded.weights,
                                         device_group, co));
  loaded.weights = ShardWeights();  // on the device now; free the host copy
  return compute;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const std::string& model_dir,
                                                       const EngineOptions& o,
                                                       Communicator& world) {
  // Options are the same on every rank, so every rank returns here alike.
  if (o.backend != "cpu" && o.backend != "cuda" && o.backend != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend \"", o.backend, "\": expected cpu, cuda or auto"));
  }
  if (o.stage_handoff != "nccl" && o.stage_handoff != "host") {
    return absl::InvalidArgumentError(
        absl::StrCat("--stage_handoff \"", o.stage_handoff, "\": expected nccl or host"));
  }
  if (!(o.gpu_memory_fraction > 0.0 && o.gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu_memory_fraction ", o.gpu_memory_fraction, " is outside (0, 1]"));
  }
  // Split first: it is collective, and every rank must reach it whatever fails later.
  const int tp = std::max(1, o.tp);
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> tp_group,
                   world.Split(world.rank() / tp, world.rank() % tp));
  absl::StatusOr<Loaded> loaded = LoadRank(model_dir, o, world.size(), world.rank());
  RETURN_IF_ERROR(AgreeOnStatus(world, loaded.status()));
  ASSIGN_OR_RETURN(std::string backend, ChooseBackend(o, *loaded, world));

  std::unique_ptr<DeviceCommunicator> device_group;
  StageLinks links;
  // The same on every rank: options, layout and backend are agreed.
  const bool device_handoff =
      backend == "cuda" && loaded->layout.pp > 1 && o.stage_handoff == "nccl";
  if (backend == "cuda") {
    RETURN_IF_ERROR(AgreeOnStatus(world, CheckCudaDevice(o)));
    if (tp > 1) {
      // Collective over each TP group (one verdict per group), then over the job.
      absl::StatusOr<std::unique_ptr<DeviceCommunicator>> nccl =
          CreateNcclCommunicator(*tp_group, o.cuda_device, absl::Seconds(o.nccl_timeout_s));
      RETURN_IF_ERROR(AgreeOnStatus(world, nccl.status()));
      device_group = std::move(*nccl);
    }
    // Before the compute, so that the KV cache is sized after NCCL took its memory.
    if (device_handoff) {
      ASSIGN_OR_RETURN(links, CreateStageLinks(world, loaded->layout, o));
    }
  }
  absl::StatusOr<std::unique_ptr<RankCompute>> compute =
      CreateCompute(backend, *loaded, o, *tp_group, device_group.get());
  RETURN_IF_ERROR(AgreeOnStatus(world, compute.status()));
  // Before the KV cache is sized: NCCL allocates its buffers when it connects.
  RETURN_IF_ERROR(AgreeOnStatus(world, (*compute)->PrepareCollectives()));
  if (device_handoff) {
    // Collective with the neighbours (connects each link, which also allocates NCCL's
    // buffers for it), then one verdict for the job.
    RETURN_IF_ERROR(AgreeOnStatus(
        world, (*compute)->ConnectStages(links.from_previous.get(), /*previous_peer=*/0,
                                         links.to_next.get(), /*next_peer=*/1)));
  }

  // One block pool per replica: every rank takes the smallest count any rank can hold.
  int64_t blocks = o.kv_num_blocks;
  absl::Status fit = absl::OkStatus();
  if (blocks <= 0) {
    absl::StatusOr<int64_t> local = (*compute)->KvBlocksThatFit(o.kv_block_size);
    fit = local.status();
    int32_t neg = local.ok() ? -static_cast<int32_t>(std::min<int64_t>(*local, INT32_MAX)) : 0;
    RETURN_IF_ERROR(world.AllReduceMax(&neg, 1));
    blocks = -static_cast<int64_t>(neg);
  }
  RETURN_IF_ERROR(AgreeOnStatus(world, fit));
  RETURN_IF_ERROR(AgreeOnStatus(world, (*compute)->AllocateKvCache(blocks, o.kv_block_size)));
  return std::unique_ptr<Engine>(new Engine(std::move(loaded->config), std::move(loaded->layout),
                                            o.kv_block_size, world, std::move(tp_group),
                                            std::move(device_group), std::move(links),
                                            device_handoff, std::move(*compute)));
}

absl::StatusOr<Engine::StageLinks> Engine::CreateStageLinks(Communicator& world,
                                                            const Layout& layout,
                                                            const EngineOptions& o) {
  // Two splits, made by every rank in this order (they are collective over the world): the
  // first pairs stages (0,1), (2,3), ..., the second (1,2), (3,4), ...; a stage without a
  // partner is alone in its group. Tensor rank t pairs with tensor rank t. Key = stage, so
  // the lower stage is rank 0 of a pair.
  RETURN_IF_ERROR(AgreeOnStatus(
      world, NcclAvailable() ? absl::OkStatus()
                             : absl::FailedPreconditionError(
                                   "--stage_handoff nccl: this build has no NCCL (--stage_handoff "
                                   "host hands hidden states over through host memory)")));
  const int tp = layout.tp, stage = layout.stage, t = layout.tp_rank;
  std::unique_ptr<Communicator> pairs[2];
  ASSIGN_OR_RETURN(pairs[0], world.Split((stage / 2) * tp + t, stage));
  ASSIGN_OR_RETURN(pairs[1], world.Split(((stage + 1) / 2) * tp + t, stage));
  // One NCCL init per pair, the first split's pairs first on every rank. An init involves
  // only the pair's two ranks, both of which reach it after the same agreed steps, and every
  // rank's inits are in the same order: no rank waits for one that waits for it.
  StageLinks links;
  for (const std::unique_ptr<Communicator>& pair : pairs) {
    absl::Status local = absl::OkStatus();
    std::unique_ptr<DeviceCommunicator> link;
    if (pair->size() == 2) {
      absl::StatusOr<std::unique_ptr<DeviceCommunicator>> nccl =
          CreateNcclCommunicator(*pair, o.cuda_device, absl::Seconds(o.nccl_timeout_s));
      if (nccl.ok()) {
        link = std::move(*nccl);
      } else {
        local = absl::Status(
            nccl.status().code(),
            absl::StrCat("NCCL link between stages ", pair->rank() == 0 ? stage : stage - 1,
                         " and ", pair->rank() == 0 ? stage + 1 : stage, ": ",
                         nccl.status().message()));
      }
    } else if (pair->size() != 1) {
      local = absl::InternalError(absl::StrCat("a stage link group of ", pair->size(), " ranks"));
    }
    RETURN_IF_ERROR(AgreeOnStatus(world, local));
    if (link == nullptr) continue;
    (pair->rank() == 0 ? links.to_next : links.from_previous) = std::move(link);
  }
  // The host groups are not needed any more: NCCL bootstrapped its own connections.
  return links;
}

Engine::Engine(ModelConfig config, Layout layout, int64_t kv_block_size, Communicator& world,
               std::unique_ptr<Communicator> tp_group,
               std::unique_ptr<DeviceCommunicator> device_group, StageLinks links,
               bool device_handoff, std::unique_ptr<RankCompute> compute)
    : config_(std::move(config)),
      layout_(std::move(layout)),
      kv_block_size_(kv_block_size),
      world_(world),
      tp_group_(std::move(tp_group)),
      device_group_(std::move(device_group)),
      links_(std::move(links)),
      device_handoff_(device_handoff),
      compute_(std::move(compute)) {}

std::string_view Engine::stage_handoff() const {
  if (layout_.pp == 1) return "none";
  return device_handoff_ ? "nccl" : "host";
}

absl::Status Engine::ValidatePlan(const StepPlan& plan) const {
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqWork& s = plan.seqs[i];
    auto bad = [&](auto&&... parts) {
      return absl::InvalidArgumentError(absl::StrCat("step ", plan.step_id, " seq ", s.seq_id,
                                                     ": ", parts...));
    };
    if (s.tokens.empty()) return bad("no tokens");
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= config_.vocab_size) {
        return bad("token id ", t, " outside the vocabulary [0, ", config_.vocab_size, ")");
      }
    }
    const int64_t end = static_cast<int64_t>(s.start_pos) + static_cast<int64_t>(s.tokens.size());
    if (s.start_pos < 0 || end > config_.max_position_embeddings) {
      return bad("positions [", s.start_pos, ", ", end, ") outside the context of ",
                 config_.max_position_embeddings);
    }
    const int64_t need = (end + kv_block_size_ - 1) / kv_block_size_;
    if (static_cast<int64_t>(s.block_table.size()) < need) {
      return bad("block_table has ", s.block_table.size(), " blocks, positions up to ", end,
                 " need ", need);
    }
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= compute_->kv_num_blocks()) {
        return bad("block id ", b, " outside the cache's ", compute_->kv_num_blocks(), " blocks");
      }
    }
    const SamplingParams& p = s.sampling;
    if (!(p.temperature >= 0.0f)) return bad("temperature ", p.temperature, " < 0");
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("top_p ", p.top_p, " outside (0, 1]");
    if (p.top_k < 0) return bad("top_k ", p.top_k, " < 0");
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return bad("min_p ", p.min_p, " outside [0, 1]");
    if (!(p.repetition_penalty > 0.0f)) return bad("repetition_penalty ", p.repetition_penalty, " <= 0");
    if (s.next_prompt_token >= config_.vocab_size) return bad("next_prompt_token outside the vocabulary");
  }
  return absl::OkStatus();
}

absl::StatusOr<StepResult> Engine::Step(const StepPlan& plan) {
  RETURN_IF_ERROR(Submit(plan));
  return Collect();
}

absl::Status Engine::Submit(const StepPlan& plan) {
  if (!is_leader()) return absl::FailedPreconditionError("Submit is for the leader (rank 0) only");
  RETURN_IF_ERROR(ValidatePlan(plan));
  StepResult result;
  RETURN_IF_ERROR(Execute(SerializePlan(plan), plan, &result));
  if (layout_.pp == 1) local_results_.push_back(std::move(result));
  ++in_flight_;
  return absl::OkStatus();
}

absl::StatusOr<StepResult> Engine::Collect() {
  if (in_flight_ == 0) return absl::FailedPreconditionError("no submitted step to collect");
  --in_flight_;
  if (!local_results_.empty()) {
    StepResult r = std::move(local_results_.front());
    local_results_.pop_front();
    return r;
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> reply,
                   world_.RecvAny(layout_.RankOf(layout_.pp - 1, 0), kTagResult));
  return ParseResult(reply);
}

absl::StatusOr<std::optional<StepResult>> Engine::TryCollect() {
  if (in_flight_ == 0) return std::optional<StepResult>();
  if (local_results_.empty()) {
    ASSIGN_OR_RETURN(bool ready, world_.Probe(layout_.RankOf(layout_.pp - 1, 0), kTagResult));
    if (!ready) return std::optional<StepResult>();
  }
  ASSIGN_OR_RETURN(StepResult r, Collect());
  return std::optional<StepResult>(std::move(r));
}

absl::Status Engine::Shutdown() {
  while (in_flight_ > 0) RETURN_IF_ERROR(Collect().status());  // nothing may stay in transit
  StepPlan plan;
  plan.shutdown = true;
  return Execute(SerializePlan(plan), plan, nullptr);
}

absl::Status Engine::Serve() {
  for (;;) {
    std::vector<uint8_t> bytes;
    if (layout_.first_stage()) {
      RETURN_IF_ERROR(BroadcastBytes(*tp_group_, bytes, 0));
    } else {
      ASSIGN_OR_RETURN(bytes, world_.RecvAny(layout_.RankOf(layout_.stage - 1, layout_.tp_rank),
                                             kTagPlan));
    }
    ASSIGN_OR_RETURN(StepPlan plan, ParsePlan(bytes));
    StepResult result;
    RETURN_IF_ERROR(Execute(bytes, plan, &result));
    if (plan.shutdown) return absl::OkStatus();
    if (layout_.last_stage() && layout_.tp_rank == 0 && layout_.rank != 0) {
      RETURN_IF_ERROR(world_.SendAsync(SerializeResult(result), 0, kTagResult));
    }
  }
}

absl::Status Engine::Execute(const std::vector<uint8_t>& plan_bytes, const StepPlan& plan,
                             StepResult* result) {
  const bool from_leader = layout_.first_stage();
  if (from_leader && is_leader()) {
    std::vector<uint8_t> copy = plan_bytes;
    RETURN_IF_ERROR(BroadcastBytes(*tp_group_, copy, 0));
  }
  const int next = layout_.last_stage() ? -1 : layout_.RankOf(layout_.stage + 1, layout_.tp_rank);
  if (plan.shutdown) {
    if (next >= 0) RETURN_IF_ERROR(world_.SendAsync(plan_bytes, next, kTagPlan));
    return world_.FlushSends();
  }

  // Flatten the batch: one row per new token.
  token_ids_.clear();
  positions_.clear();
  slots_.clear();
  attn_seqs_.clear();
  const int64_t bs = kv_block_size_;
  StepRows rows;
  rows.decode = !plan.seqs.empty();
  for (const SeqWork& s : plan.seqs) {
    kernels::AttentionSeq a;
    a.token_begin = static_cast<int64_t>(token_ids_.size());
    a.num_tokens = static_cast<int64_t>(s.tokens.size());
    a.start_pos = s.start_pos;
    a.block_table = s.block_table.data();
    a.num_blocks = static_cast<int64_t>(s.block_table.size());
    attn_seqs_.push_back(a);
    rows.max_context = std::max(rows.max_context, a.start_pos + a.num_tokens);
    rows.decode = rows.decode && a.num_tokens == 1;
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int32_t pos = s.start_pos + static_cast<int32_t>(i);
      token_ids_.push_back(s.tokens[i]);
      positions_.push_back(pos);
      slots_.push_back(static_cast<int64_t>(s.block_table[pos / bs]) * bs + pos % bs);
    }
  }
  rows.token_ids = token_ids_;
  rows.positions = positions_;
  rows.slots = slots_;
  rows.seqs = attn_seqs_;
  const int64_t tokens = rows.tokens();
  const int64_t h = config_.hidden_size;
  if (device_handoff_) {
    // The compute receives from the previous stage and sends to the next over links_. The
    // plan goes first, so that the next stage can post its receive while this one computes.
    if (next >= 0) {
      // Forward may block this thread on the device until an earlier send of this rank has
      // been received, which the next stage can only do once it holds that step's plan; a
      // thread blocked on the device makes no MPI progress, so every plan sent before must
      // have been delivered first (immediate for plans under MPI's eager limit; otherwise it
      // waits for the next stage to take the previous plan, which it does without this rank).
      RETURN_IF_ERROR(world_.FlushSends());
      RETURN_IF_ERROR(world_.SendAsync(plan_bytes, next, kTagPlan));
    }
    RETURN_IF_ERROR(compute_->Forward(rows, nullptr, nullptr));
    return next >= 0 ? absl::OkStatus() : ComputeLogits(plan, result);
  }
  if (!layout_.first_stage()) {
    x_.resize(tokens * h);
    RETURN_IF_ERROR(world_.Recv(x_.data(), x_.size() * sizeof(float),
                                layout_.RankOf(layout_.stage - 1, layout_.tp_rank), kTagHidden));
  }
  RETURN_IF_ERROR(compute_->Forward(rows, x_.data(), next >= 0 ? &x_ : nullptr));

  if (next >= 0) {
    // Asynchronous, so this stage can take the next micro-batch while the next stage works;
    // the leader could otherwise block here while the last stage blocks sending it a result.
    RETURN_IF_ERROR(world_.SendAsync(plan_bytes, next, kTagPlan));
    const auto* hidden = reinterpret_cast<const uint8_t*>(x_.data());
    return world_.SendAsync(std::vector<uint8_t>(hidden, hidden + x_.size() * sizeof(float)), next,
                            kTagHidden);
  }
  return ComputeLogits(plan, result);
}

absl::Status Engine::ComputeLogits(const StepPlan& plan, StepResult* result) {
  const int64_t vocab = config_.vocab_size;
  // Sequences that want prompt logprobs or raw logits need every row's logits on the host;
  // the others only sample their last row, which the backend may do where the logits are.
  std::vector<int64_t> logit_rows;
  std::vector<int64_t> first_row(plan.seqs.size(), -1);
  std::vector<SampleRow> sample_rows;
  std::vector<size_t> sample_seq;
  seen_.resize(plan.seqs.size());
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqWork& s = plan.seqs[i];
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const int64_t begin = attn_seqs_[i].token_begin;
    if (s.return_logits || s.prompt_logprobs > 0) {
      first_row[i] = static_cast<int64_t>(logit_rows.size());
      for (int64_t r = 0; r < n; ++r) logit_rows.push_back(begin + r);
    } else if (s.sample) {
      SampleRow row;
      row.row = begin + n - 1;
      row.params = s.sampling;
      row.position = s.start_pos + n;
      row.top_logprobs = s.logprobs;
      seen_[i].clear();
      if (s.sampling.repetition_penalty != 1.0f) {
        seen_[i] = s.history;
        seen_[i].insert(seen_[i].end(), s.tokens.begin(), s.tokens.end());
      }
      row.seen = seen_[i];
      sample_rows.push_back(row);
      sample_seq.push_back(i);
    }
  }
  if (!logit_rows.empty()) RETURN_IF_ERROR(compute_->Logits(logit_rows, &logits_));
  if (!sample_rows.empty()) RETURN_IF_ERROR(compute_->Sample(sample_rows, &sampled_));
  if (layout_.tp_rank != 0 || result == nullptr) return absl::OkStatus();

  result->step_id = plan.step_id;
  result->seqs.resize(plan.seqs.size());
  for (size_t i = 0; i < plan.seqs.size(); ++i) result->seqs[i].seq_id = plan.seqs[i].seq_id;
  for (size_t k = 0; k < sample_rows.size(); ++k) {
    SeqResult& out = result->seqs[sample_seq[k]];
    out.token = sampled_[k].token;
    if (sample_rows[k].top_logprobs > 0) out.sampled = std::move(sampled_[k].logprob);
  }
  std::vector<float>& scratch = sample_scratch_;
  scratch.resize(vocab);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    if (first_row[i] < 0) continue;
    const SeqWork& s = plan.seqs[i];
    SeqResult& out = result->seqs[i];
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const float* seq_logits = logits_.data() + first_row[i] * vocab;
    if (s.return_logits) out.logits.assign(seq_logits, seq_logits + n * vocab);
    if (s.prompt_logprobs > 0) {
      for (int64_t r = 0; r < n; ++r) {
        const int32_t target = r + 1 < n ? s.tokens[r + 1] : s.next_prompt_token;
        if (target < 0) break;
        out.prompt_logprobs.push_back(
            ComputeLogprobs(seq_logits + r * vocab, vocab, target, s.prompt_logprobs));
      }
    }
    if (!s.sample) continue;
    const float* last = seq_logits + (n - 1) * vocab;
    std::copy(last, last + vocab, scratch.begin());
    std::vector<int32_t> seen;
    if (s.sampling.repetition_penalty != 1.0f) {
      seen = s.history;
      seen.insert(seen.end(), s.tokens.begin(), s.tokens.end());
    }
    out.token = SampleToken(scratch.data(), vocab, s.sampling, seen, s.start_pos + n);
    if (s.logprobs > 0) out.sampled = ComputeLogprobs(last, vocab, out.token, s.logprobs);
  }
  return absl::OkStatus();
}

}  // namespace tpserve
