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

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const std::string& model_dir,
                                                       const EngineOptions& o,
                                                       Communicator& world) {
  // Split first: it is collective, and every rank must reach it whatever fails later.
  const int tp = std::max(1, o.tp);
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> tp_group,
                   world.Split(world.rank() / tp, world.rank() % tp));
  absl::StatusOr<Loaded> loaded = LoadRank(model_dir, o, world.size(), world.rank());
  RETURN_IF_ERROR(AgreeOnStatus(world, loaded.status()));

  const ModelConfig& c = loaded->config;
  const Layout& l = loaded->layout;
  int64_t blocks = o.kv_num_blocks;
  if (blocks <= 0) blocks = 4 * ((c.max_position_embeddings + o.kv_block_size - 1) / o.kv_block_size);
  KvCache kv(l.num_layers(), blocks, o.kv_block_size, l.kv_heads(), c.head_dim);
  return std::unique_ptr<Engine>(new Engine(std::move(loaded->config), std::move(loaded->layout),
                                            std::move(loaded->weights), std::move(kv), world,
                                            std::move(tp_group)));
}

Engine::Engine(ModelConfig config, Layout layout, ShardWeights weights, KvCache kv,
               Communicator& world, std::unique_ptr<Communicator> tp_group)
    : config_(std::move(config)),
      layout_(std::move(layout)),
      weights_(std::move(weights)),
      kv_(std::move(kv)),
      world_(world),
      tp_group_(std::move(tp_group)) {
  const int64_t half = config_.head_dim / 2;
  rope_cos_.resize(config_.max_position_embeddings * half);
  rope_sin_.resize(config_.max_position_embeddings * half);
  kernels::BuildRopeTable(config_.rope_theta, config_.head_dim, config_.max_position_embeddings,
                          rope_cos_.data(), rope_sin_.data());
  rope_ = {config_.max_position_embeddings, half, rope_cos_.data(), rope_sin_.data()};
  const int group = config_.num_heads / config_.num_kv_heads;
  for (int h = layout_.q_head_begin; h < layout_.q_head_end; ++h) {
    kv_head_of_q_.push_back(h / group - layout_.kv_head_begin);
  }
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
    const int64_t need = (end + kv_.block_size() - 1) / kv_.block_size();
    if (static_cast<int64_t>(s.block_table.size()) < need) {
      return bad("block_table has ", s.block_table.size(), " blocks, positions up to ", end,
                 " need ", need);
    }
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= kv_.num_blocks()) {
        return bad("block id ", b, " outside the cache's ", kv_.num_blocks(), " blocks");
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
  const int64_t bs = kv_.block_size();
  for (const SeqWork& s : plan.seqs) {
    kernels::AttentionSeq a;
    a.token_begin = static_cast<int64_t>(token_ids_.size());
    a.num_tokens = static_cast<int64_t>(s.tokens.size());
    a.start_pos = s.start_pos;
    a.block_table = s.block_table.data();
    a.num_blocks = static_cast<int64_t>(s.block_table.size());
    attn_seqs_.push_back(a);
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int32_t pos = s.start_pos + static_cast<int32_t>(i);
      token_ids_.push_back(s.tokens[i]);
      positions_.push_back(pos);
      slots_.push_back(static_cast<int64_t>(s.block_table[pos / bs]) * bs + pos % bs);
    }
  }
  const int64_t tokens = static_cast<int64_t>(token_ids_.size());
  const int64_t h = config_.hidden_size;
  x_.resize(tokens * h);
  if (layout_.first_stage()) {
    kernels::Embedding(token_ids_.data(), tokens, weights_.embedding.view, x_.data());
  } else {
    RETURN_IF_ERROR(world_.Recv(x_.data(), x_.size() * sizeof(float),
                                layout_.RankOf(layout_.stage - 1, layout_.tp_rank), kTagHidden));
  }

  comm_status_ = absl::OkStatus();
  for (int layer = 0; layer < layout_.num_layers(); ++layer) {
    RunLayer(layer, tokens, layer == 0);
    RETURN_IF_ERROR(comm_status_);
  }
  // The last layer's MLP output is still pending in r_.
  if (layout_.num_layers() > 0) {
    for (int64_t i = 0; i < tokens * h; ++i) x_[i] += r_[i];
  }

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

void Engine::RunLayer(int layer, int64_t tokens, bool first_layer) {
  const LayerWeights& w = weights_.layers[layer];
  const int64_t h = config_.hidden_size, d = config_.head_dim;
  const int64_t qh = layout_.q_heads(), kvh = layout_.kv_heads();
  const float eps = config_.rms_norm_eps;
  xn_.resize(tokens * h);
  if (first_layer) {
    kernels::RmsNorm(x_.data(), w.input_norm.data(), tokens, h, eps, xn_.data());
  } else {
    kernels::AddRmsNorm(x_.data(), r_.data(), w.input_norm.data(), tokens, h, eps, xn_.data());
  }

  // Attention: fused q|k|v projection, split per token into contiguous q, k, v.
  const int64_t qkv_cols = (qh + 2 * kvh) * d;
  qkv_.resize(tokens * qkv_cols);
  kernels::MatMul(xn_.data(), tokens, w.qkv.view, qkv_.data());
  q_.resize(tokens * qh * d);
  k_.resize(tokens * kvh * d);
  v_.resize(tokens * kvh * d);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = qkv_.data() + t * qkv_cols;
    std::memcpy(q_.data() + t * qh * d, row, qh * d * sizeof(float));
    std::memcpy(k_.data() + t * kvh * d, row + qh * d, kvh * d * sizeof(float));
    std::memcpy(v_.data() + t * kvh * d, row + (qh + kvh) * d, kvh * d * sizeof(float));
  }
  kernels::ApplyRope(q_.data(), tokens, qh, d, positions_.data(), rope_);
  kernels::ApplyRope(k_.data(), tokens, kvh, d, positions_.data(), rope_);
  const kernels::KvCacheView cache = kv_.View(layer);
  kernels::WriteKvCache(k_.data(), v_.data(), tokens, slots_.data(), cache);

  attn_.resize(tokens * qh * d);
  kernels::AttentionParams ap;
  ap.q = q_.data();
  ap.out = attn_.data();
  ap.q_heads = qh;
  ap.kv_head_of_q = kv_head_of_q_.data();
  ap.scale = 1.0f / std::sqrt(static_cast<float>(d));
  ap.sliding_window = config_.sliding_window;
  ap.cache = cache;
  ap.seqs = attn_seqs_.data();
  ap.num_seqs = static_cast<int64_t>(attn_seqs_.size());
  kernels::PagedAttention(ap);

  r_.resize(tokens * h);
  kernels::MatMul(attn_.data(), tokens, w.o.view, r_.data());
  if (comm_status_.ok()) comm_status_ = tp_group_->AllReduceSum(r_.data(), r_.size());

  // MLP: fused gate|up, SwiGLU, down; partial sums reduced over the TP group.
  kernels::AddRmsNorm(x_.data(), r_.data(), w.post_norm.data(), tokens, h, eps, xn_.data());
  const int64_t cols = layout_.mlp_end - layout_.mlp_begin;
  gate_up_.resize(tokens * 2 * cols);
  kernels::MatMul(xn_.data(), tokens, w.gate_up.view, gate_up_.data());
  act_.resize(tokens * cols);
  kernels::SwiGlu(gate_up_.data(), tokens, cols, act_.data());
  kernels::MatMul(act_.data(), tokens, w.down.view, r_.data());
  if (comm_status_.ok()) comm_status_ = tp_group_->AllReduceSum(r_.data(), r_.size());
}

absl::Status Engine::ComputeLogits(const StepPlan& plan, StepResult* result) {
  const int64_t h = config_.hidden_size, vocab = config_.vocab_size;
  // Rows that need logits: the last row of a sampled sequence, or every row when the
  // sequence asks for prompt logprobs or raw logits.
  std::vector<int64_t> rows;
  std::vector<int64_t> first_row(plan.seqs.size(), -1);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqWork& s = plan.seqs[i];
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const int64_t begin = attn_seqs_[i].token_begin;
    first_row[i] = static_cast<int64_t>(rows.size());
    if (s.return_logits || s.prompt_logprobs > 0) {
      for (int64_t r = 0; r < n; ++r) rows.push_back(begin + r);
    } else if (s.sample) {
      rows.push_back(begin + n - 1);
    }
  }
  const int64_t nr = static_cast<int64_t>(rows.size());
  head_in_.resize(nr * h);
  for (int64_t r = 0; r < nr; ++r) {
    std::memcpy(head_in_.data() + r * h, x_.data() + rows[r] * h, h * sizeof(float));
  }
  kernels::RmsNorm(head_in_.data(), weights_.final_norm.data(), nr, h, config_.rms_norm_eps,
                   head_in_.data());
  const int64_t local = layout_.vocab_end - layout_.vocab_begin;
  std::vector<float>& logits = logits_;
  if (layout_.tp == 1) {
    logits.resize(nr * vocab);
    kernels::MatMul(head_in_.data(), nr, weights_.lm_head.view, logits.data());
  } else {
    // Each tensor rank holds a vocab shard; shards are padded to one size for the gather.
    const int64_t shard = layout_.vocab_shard;
    shard_logits_.resize(nr * local);
    kernels::MatMul(head_in_.data(), nr, weights_.lm_head.view, shard_logits_.data());
    padded_.assign(nr * shard, 0.0f);
    for (int64_t r = 0; r < nr; ++r) {
      std::memcpy(padded_.data() + r * shard, shard_logits_.data() + r * local, local * sizeof(float));
    }
    gathered_.resize(layout_.tp * nr * shard);
    RETURN_IF_ERROR(tp_group_->AllGather(padded_.data(), padded_.size() * sizeof(float), gathered_.data()));
    logits.resize(nr * vocab);
    for (int t = 0; t < layout_.tp; ++t) {
      const int64_t begin = t * shard;
      const int64_t count = std::min(shard, vocab - begin);
      for (int64_t r = 0; r < nr && count > 0; ++r) {
        std::memcpy(logits.data() + r * vocab + begin, gathered_.data() + (t * nr + r) * shard,
                    count * sizeof(float));
      }
    }
  }
  if (layout_.tp_rank != 0 || result == nullptr) return absl::OkStatus();

  result->step_id = plan.step_id;
  result->seqs.resize(plan.seqs.size());
  std::vector<float>& scratch = sample_scratch_;
  scratch.resize(vocab);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqWork& s = plan.seqs[i];
    SeqResult& out = result->seqs[i];
    out.seq_id = s.seq_id;
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const bool all_rows = s.return_logits || s.prompt_logprobs > 0;
    const float* seq_logits = logits.data() + first_row[i] * vocab;
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
    const float* last = seq_logits + (all_rows ? n - 1 : 0) * vocab;
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
