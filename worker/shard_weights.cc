#include "worker/shard_weights.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tpserve {
namespace {

// One piece of a fused matrix: `name`'s slice, appended below the previous pieces.
struct Part {
  std::string name;
  std::vector<int64_t> shape;
  Slice2D slice;
};

absl::StatusOr<DType> WeightDType(const Checkpoint& ckpt, const std::string& name) {
  const TensorInfo* info = ckpt.Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" not found in checkpoint"));
  }
  if (info->dtype != DType::kF32 && info->dtype != DType::kF16 && info->dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(ckpt.FileOf(name), ": tensor \"", name,
                                                   "\" has dtype ", DTypeName(info->dtype),
                                                   ", expected F32, F16 or BF16"));
  }
  return info->dtype;
}

// Stacks the slices of `parts` row-wise into one matrix of `cols` columns.
absl::StatusOr<OwnedMatrix> LoadMatrix(const Checkpoint& ckpt, const std::vector<Part>& parts,
                                       int64_t cols) {
  ASSIGN_OR_RETURN(DType dtype, WeightDType(ckpt, parts[0].name));
  int64_t rows = 0;
  for (const Part& p : parts) {
    ASSIGN_OR_RETURN(DType d, WeightDType(ckpt, p.name));
    if (d != dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          ckpt.FileOf(p.name), ": tensor \"", p.name, "\" is ", DTypeName(d), " but \"",
          parts[0].name, "\" is ", DTypeName(dtype), "; fused projections need one dtype"));
    }
    rows += p.slice.row_end - p.slice.row_begin;
  }
  OwnedMatrix m;
  const size_t elem = DTypeSize(dtype);
  m.bytes.resize(static_cast<size_t>(rows * cols) * elem);
  size_t offset = 0;
  for (const Part& p : parts) {
    RETURN_IF_ERROR(ckpt.ReadSlice(p.name, p.shape, p.slice, m.bytes.data() + offset));
    offset += static_cast<size_t>((p.slice.row_end - p.slice.row_begin) * cols) * elem;
  }
  m.view = {m.bytes.data(), dtype, rows, cols};
  return m;
}

absl::StatusOr<std::vector<float>> LoadVector(const Checkpoint& ckpt, const std::string& name,
                                              int64_t n) {
  ASSIGN_OR_RETURN(DType dtype, WeightDType(ckpt, name));
  std::vector<uint8_t> raw(static_cast<size_t>(n) * DTypeSize(dtype));
  RETURN_IF_ERROR(ckpt.ReadSlice(name, {n}, Slice2D{0, n, 0, 1}, raw.data()));
  std::vector<float> out(n);
  ConvertToF32(dtype, raw.data(), out.data(), n);
  return out;
}

Slice2D Rows(int64_t begin, int64_t end, int64_t cols) { return {begin, end, 0, cols}; }
Slice2D Cols(int64_t rows, int64_t begin, int64_t end) { return {0, rows, begin, end}; }

}  // namespace

absl::StatusOr<ShardWeights> LoadShardWeights(const Checkpoint& ckpt, const ModelConfig& c,
                                              const Layout& l) {
  ShardWeights w;
  const int64_t h = c.hidden_size, d = c.head_dim, inter = c.intermediate_size;
  const int64_t q_rows = static_cast<int64_t>(c.num_heads) * d;
  const int64_t kv_rows = static_cast<int64_t>(c.num_kv_heads) * d;
  for (int i = l.layer_begin; i < l.layer_end; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights lw;
    ASSIGN_OR_RETURN(lw.input_norm, LoadVector(ckpt, p + "input_layernorm.weight", h));
    ASSIGN_OR_RETURN(lw.post_norm, LoadVector(ckpt, p + "post_attention_layernorm.weight", h));
    ASSIGN_OR_RETURN(
        lw.qkv,
        LoadMatrix(ckpt,
                   {{p + "self_attn.q_proj.weight", {q_rows, h}, Rows(l.q_head_begin * d, l.q_head_end * d, h)},
                    {p + "self_attn.k_proj.weight", {kv_rows, h}, Rows(l.kv_head_begin * d, l.kv_head_end * d, h)},
                    {p + "self_attn.v_proj.weight", {kv_rows, h}, Rows(l.kv_head_begin * d, l.kv_head_end * d, h)}},
                   h));
    ASSIGN_OR_RETURN(lw.o, LoadMatrix(ckpt,
                                      {{p + "self_attn.o_proj.weight", {h, q_rows},
                                        Cols(h, l.q_head_begin * d, l.q_head_end * d)}},
                                      (l.q_head_end - l.q_head_begin) * d));
    ASSIGN_OR_RETURN(lw.gate_up,
                     LoadMatrix(ckpt,
                                {{p + "mlp.gate_proj.weight", {inter, h}, Rows(l.mlp_begin, l.mlp_end, h)},
                                 {p + "mlp.up_proj.weight", {inter, h}, Rows(l.mlp_begin, l.mlp_end, h)}},
                                h));
    ASSIGN_OR_RETURN(lw.down, LoadMatrix(ckpt,
                                         {{p + "mlp.down_proj.weight", {h, inter},
                                           Cols(h, l.mlp_begin, l.mlp_end)}},
                                         l.mlp_end - l.mlp_begin));
    w.bytes += (lw.input_norm.size() + lw.post_norm.size()) * sizeof(float) + lw.qkv.bytes.size() +
               lw.o.bytes.size() + lw.gate_up.bytes.size() + lw.down.bytes.size();
    w.layers.push_back(std::move(lw));
  }
  const int64_t vocab = c.vocab_size;
  if (l.first_stage()) {
    ASSIGN_OR_RETURN(w.embedding, LoadMatrix(ckpt,
                                             {{"model.embed_tokens.weight", {vocab, h}, Rows(0, vocab, h)}},
                                             h));
    w.bytes += w.embedding.bytes.size();
  }
  if (l.last_stage()) {
    ASSIGN_OR_RETURN(w.final_norm, LoadVector(ckpt, "model.norm.weight", h));
    const std::string head = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    ASSIGN_OR_RETURN(w.lm_head,
                     LoadMatrix(ckpt, {{head, {vocab, h}, Rows(l.vocab_begin, l.vocab_end, h)}}, h));
    w.bytes += w.final_norm.size() * sizeof(float) + w.lm_head.bytes.size();
  }
  return w;
}

}  // namespace tpserve
