#include "worker/cpu_rank_compute.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/kv_cache.h"

namespace tpserve {
namespace {

class CpuRankCompute final : public RankCompute {
 public:
  CpuRankCompute(const ModelConfig& config, const Layout& layout, ShardWeights weights,
                 Communicator* tp_group);

  std::string_view backend() const override { return "cpu"; }
  uint64_t weight_bytes() const override { return weights_.bytes; }
  absl::StatusOr<int64_t> KvBlocksThatFit(int64_t block_size) const override;
  absl::Status AllocateKvCache(int64_t num_blocks, int64_t block_size) override;
  int64_t kv_num_blocks() const override { return kv_ ? kv_->num_blocks() : 0; }
  uint64_t kv_bytes() const override { return kv_ ? kv_->bytes() : 0; }
  absl::Status Forward(const StepRows& rows, const float* hidden_in,
                       std::vector<float>* hidden_out) override;
  absl::Status Logits(std::span<const int64_t> rows, std::vector<float>* logits) override;

 private:
  void RunLayer(int layer, const StepRows& rows, bool first_layer);
  absl::Status AllReduce(std::vector<float>& v);

  const ModelConfig config_;
  const Layout layout_;
  ShardWeights weights_;
  Communicator* tp_group_;
  std::optional<KvCache> kv_;
  std::vector<float> rope_cos_, rope_sin_;
  kernels::RopeTable rope_;
  std::vector<int32_t> kv_head_of_q_;
  absl::Status comm_status_;

  // Per-step scratch, grown as needed and reused.
  std::vector<float> x_, xn_, qkv_, q_, k_, v_, attn_, r_, gate_up_, act_;
  std::vector<float> head_in_, shard_logits_, padded_, gathered_;
};

CpuRankCompute::CpuRankCompute(const ModelConfig& config, const Layout& layout,
                               ShardWeights weights, Communicator* tp_group)
    : config_(config), layout_(layout), weights_(std::move(weights)), tp_group_(tp_group) {
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

absl::StatusOr<int64_t> CpuRankCompute::KvBlocksThatFit(int64_t block_size) const {
  // Host memory is not measured: room for four sequences of the full context.
  return 4 * ((config_.max_position_embeddings + block_size - 1) / block_size);
}

absl::Status CpuRankCompute::AllocateKvCache(int64_t num_blocks, int64_t block_size) {
  if (num_blocks < 1 || block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache of ", num_blocks, " blocks of ", block_size, " tokens"));
  }
  kv_.emplace(layout_.num_layers(), num_blocks, block_size, layout_.kv_heads(), config_.head_dim);
  return absl::OkStatus();
}

absl::Status CpuRankCompute::AllReduce(std::vector<float>& v) {
  if (tp_group_ == nullptr || !comm_status_.ok()) return comm_status_;
  comm_status_ = tp_group_->AllReduceSum(v.data(), v.size());
  return comm_status_;
}

absl::Status CpuRankCompute::Forward(const StepRows& rows, const float* hidden_in,
                                     std::vector<float>* hidden_out) {
  if (!kv_) return absl::FailedPreconditionError("Forward before AllocateKvCache");
  const int64_t tokens = rows.tokens();
  const int64_t h = config_.hidden_size;
  x_.resize(tokens * h);
  if (layout_.first_stage()) {
    kernels::Embedding(rows.token_ids.data(), tokens, weights_.embedding.view, x_.data());
  } else {
    std::copy(hidden_in, hidden_in + tokens * h, x_.begin());
  }
  comm_status_ = absl::OkStatus();
  for (int layer = 0; layer < layout_.num_layers(); ++layer) {
    RunLayer(layer, rows, layer == 0);
    RETURN_IF_ERROR(comm_status_);
  }
  // The last layer's MLP output is still pending in r_.
  if (layout_.num_layers() > 0) {
    for (int64_t i = 0; i < tokens * h; ++i) x_[i] += r_[i];
  }
  if (hidden_out != nullptr) hidden_out->assign(x_.begin(), x_.end());
  return absl::OkStatus();
}

void CpuRankCompute::RunLayer(int layer, const StepRows& rows, bool first_layer) {
  const LayerWeights& w = weights_.layers[layer];
  const int64_t tokens = rows.tokens();
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
  kernels::ApplyRope(q_.data(), tokens, qh, d, rows.positions.data(), rope_);
  kernels::ApplyRope(k_.data(), tokens, kvh, d, rows.positions.data(), rope_);
  const kernels::KvCacheView cache = kv_->View(layer);
  kernels::WriteKvCache(k_.data(), v_.data(), tokens, rows.slots.data(), cache);

  attn_.resize(tokens * qh * d);
  kernels::AttentionParams ap;
  ap.q = q_.data();
  ap.out = attn_.data();
  ap.q_heads = qh;
  ap.kv_head_of_q = kv_head_of_q_.data();
  ap.scale = 1.0f / std::sqrt(static_cast<float>(d));
  ap.sliding_window = config_.sliding_window;
  ap.cache = cache;
  ap.seqs = rows.seqs.data();
  ap.num_seqs = static_cast<int64_t>(rows.seqs.size());
  kernels::PagedAttention(ap);

  r_.resize(tokens * h);
  kernels::MatMul(attn_.data(), tokens, w.o.view, r_.data());
  (void)AllReduce(r_);  // a failure stays in comm_status_, checked after the layer

  // MLP: fused gate|up, SwiGLU, down; partial sums reduced over the TP group.
  kernels::AddRmsNorm(x_.data(), r_.data(), w.post_norm.data(), tokens, h, eps, xn_.data());
  const int64_t cols = layout_.mlp_end - layout_.mlp_begin;
  gate_up_.resize(tokens * 2 * cols);
  kernels::MatMul(xn_.data(), tokens, w.gate_up.view, gate_up_.data());
  act_.resize(tokens * cols);
  kernels::SwiGlu(gate_up_.data(), tokens, cols, act_.data());
  kernels::MatMul(act_.data(), tokens, w.down.view, r_.data());
  (void)AllReduce(r_);
}

absl::Status CpuRankCompute::Logits(std::span<const int64_t> rows, std::vector<float>* logits) {
  const int64_t h = config_.hidden_size, vocab = config_.vocab_size;
  const int64_t nr = static_cast<int64_t>(rows.size());
  head_in_.resize(nr * h);
  for (int64_t r = 0; r < nr; ++r) {
    std::memcpy(head_in_.data() + r * h, x_.data() + rows[r] * h, h * sizeof(float));
  }
  kernels::RmsNorm(head_in_.data(), weights_.final_norm.data(), nr, h, config_.rms_norm_eps,
                   head_in_.data());
  logits->resize(nr * vocab);
  if (layout_.tp == 1) {
    kernels::MatMul(head_in_.data(), nr, weights_.lm_head.view, logits->data());
    return absl::OkStatus();
  }
  // Each tensor rank holds a vocab shard; shards are padded to one size for the gather.
  const int64_t local = layout_.vocab_end - layout_.vocab_begin;
  const int64_t shard = layout_.vocab_shard;
  shard_logits_.resize(nr * local);
  kernels::MatMul(head_in_.data(), nr, weights_.lm_head.view, shard_logits_.data());
  padded_.assign(nr * shard, 0.0f);
  for (int64_t r = 0; r < nr; ++r) {
    std::memcpy(padded_.data() + r * shard, shard_logits_.data() + r * local, local * sizeof(float));
  }
  gathered_.resize(layout_.tp * nr * shard);
  RETURN_IF_ERROR(tp_group_->AllGather(padded_.data(), padded_.size() * sizeof(float),
                                       gathered_.data()));
  for (int t = 0; t < layout_.tp; ++t) {
    const int64_t begin = t * shard;
    const int64_t count = std::min(shard, vocab - begin);
    for (int64_t r = 0; r < nr && count > 0; ++r) {
      std::memcpy(logits->data() + r * vocab + begin, gathered_.data() + (t * nr + r) * shard,
                  count * sizeof(float));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RankCompute>> CreateCpuRankCompute(const ModelConfig& config,
                                                                  const Layout& layout,
                                                                  ShardWeights weights,
                                                                  Communicator* tp_group) {
  if (layout.tp > 1 && (tp_group == nullptr || tp_group->size() != layout.tp)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor parallelism ", layout.tp, " needs a TP group of that size"));
  }
  return std::unique_ptr<RankCompute>(
      new CpuRankCompute(config, layout, std::move(weights), tp_group));
}

}  // namespace tpserve
