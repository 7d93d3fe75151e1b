// The GGUF form of LoadShardWeights (see shard_weights.h).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "model/gguf_config.h"
#include "model/gguf_dequant.h"
#include "worker/shard_weights.h"

namespace tpserve {
namespace {

// Checks `name` exists with ggml dims `dims` ({cols, rows} for a matrix, {n} for a vector)
// and a dequantisable type.
absl::StatusOr<const GgufTensorInfo*> FindTensor(const GgufModel& g, const std::string& name,
                                                 const std::vector<int64_t>& dims) {
  const GgufTensorInfo* t = g.file().FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("GGUF tensor \"", name, "\" not found"));
  }
  if (t->dims != dims) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF tensor \"", name, "\" has ggml dims [", absl::StrJoin(t->dims, ", "),
                     "], expected [", absl::StrJoin(dims, ", "), "]"));
  }
  if (!CanDequantize(t->type)) {
    const std::optional<GgmlTypeTraits> traits = GetGgmlTypeTraits(t->type);
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF tensor \"", name, "\" has type ", traits ? traits->name : "?", " (",
        static_cast<uint32_t>(t->type), "), which cannot be dequantised"));
  }
  return t;
}

// Appends rows [begin, end) of matrix `name` ([rows, cols]) to `out`, as fp32.
absl::Status AppendRows(const GgufModel& g, const std::string& name, int64_t rows, int64_t cols,
                        int64_t begin, int64_t end, std::vector<float>& out) {
  ASSIGN_OR_RETURN(const GgufTensorInfo* t, FindTensor(g, name, {cols, rows}));
  const size_t at = out.size();
  out.resize(at + static_cast<size_t>((end - begin) * cols));
  absl::Status s = g.ReadRows(*t, begin, end - begin, out.data() + at);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("GGUF tensor \"", name, "\": ", s.message()));
  return absl::OkStatus();
}

// Like AppendRows for q/k: whole heads [head_begin, head_end), put back into HF row order.
absl::Status AppendQkHeads(const GgufModel& g, const std::string& name, int64_t heads,
                           int64_t head_dim, int64_t cols, int64_t head_begin, int64_t head_end,
                           std::vector<float>& out) {
  std::vector<float> permuted;
  RETURN_IF_ERROR(AppendRows(g, name, heads * head_dim, cols, head_begin * head_dim,
                             head_end * head_dim, permuted));
  const size_t at = out.size();
  out.resize(at + permuted.size());
  UnpermuteGgufQkRows(permuted.data(), head_end - head_begin, head_dim, cols, out.data() + at);
  return absl::OkStatus();
}

// Columns [begin, end) of matrix `name` ([rows, cols]), all rows. A quantised block spans
// columns, so whole rows are dequantised, a few at a time: the transient buffer stays small
// instead of a whole fp32 copy of the matrix (235 MB for a 14336 x 4096 down projection).
absl::StatusOr<std::vector<float>> ReadCols(const GgufModel& g, const std::string& name,
                                            int64_t rows, int64_t cols, int64_t begin,
                                            int64_t end) {
  constexpr int64_t kRowsAtOnce = 64;
  std::vector<float> chunk;
  std::vector<float> out(static_cast<size_t>(rows * (end - begin)));
  for (int64_t r0 = 0; r0 < rows; r0 += kRowsAtOnce) {
    const int64_t n = std::min(kRowsAtOnce, rows - r0);
    chunk.clear();
    RETURN_IF_ERROR(AppendRows(g, name, rows, cols, r0, r0 + n, chunk));
    for (int64_t r = 0; r < n; ++r) {
      std::memcpy(out.data() + (r0 + r) * (end - begin), chunk.data() + r * cols + begin,
                  sizeof(float) * (end - begin));
    }
  }
  return out;
}

absl::StatusOr<std::vector<float>> ReadVector(const GgufModel& g, const std::string& name,
                                              int64_t n) {
  ASSIGN_OR_RETURN(const GgufTensorInfo* t, FindTensor(g, name, {n}));
  std::vector<float> out(n);
  absl::Status s = g.ReadRows(*t, 0, 1, out.data());
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("GGUF tensor \"", name, "\": ", s.message()));
  return out;
}

OwnedMatrix ToMatrix(const std::vector<float>& v, int64_t cols) {
  OwnedMatrix m;
  m.bytes.resize(v.size() * sizeof(float));
  std::memcpy(m.bytes.data(), v.data(), m.bytes.size());
  m.view = {m.bytes.data(), DType::kF32, static_cast<int64_t>(v.size()) / cols, cols};
  return m;
}

}  // namespace

absl::StatusOr<ShardWeights> LoadShardWeights(const GgufModel& g, const ModelConfig& c,
                                              const Layout& l) {
  ShardWeights w;
  const int64_t h = c.hidden_size, d = c.head_dim, inter = c.intermediate_size;
  const int64_t q_rows = static_cast<int64_t>(c.num_heads) * d;
  const int64_t kv_rows = static_cast<int64_t>(c.num_kv_heads) * d;
  for (int i = l.layer_begin; i < l.layer_end; ++i) {
    const std::string p = absl::StrCat("blk.", i, ".");
    LayerWeights lw;
    ASSIGN_OR_RETURN(lw.input_norm, ReadVector(g, p + "attn_norm.weight", h));
    ASSIGN_OR_RETURN(lw.post_norm, ReadVector(g, p + "ffn_norm.weight", h));
    std::vector<float> buf;
    RETURN_IF_ERROR(AppendQkHeads(g, p + "attn_q.weight", c.num_heads, d, h, l.q_head_begin,
                                  l.q_head_end, buf));
    RETURN_IF_ERROR(AppendQkHeads(g, p + "attn_k.weight", c.num_kv_heads, d, h, l.kv_head_begin,
                                  l.kv_head_end, buf));
    RETURN_IF_ERROR(AppendRows(g, p + "attn_v.weight", kv_rows, h, l.kv_head_begin * d,
                               l.kv_head_end * d, buf));
    lw.qkv = ToMatrix(buf, h);
    ASSIGN_OR_RETURN(buf, ReadCols(g, p + "attn_output.weight", h, q_rows, l.q_head_begin * d,
                                   l.q_head_end * d));
    lw.o = ToMatrix(buf, (l.q_head_end - l.q_head_begin) * d);
    buf.clear();
    RETURN_IF_ERROR(AppendRows(g, p + "ffn_gate.weight", inter, h, l.mlp_begin, l.mlp_end, buf));
    RETURN_IF_ERROR(AppendRows(g, p + "ffn_up.weight", inter, h, l.mlp_begin, l.mlp_end, buf));
    lw.gate_up = ToMatrix(buf, h);
    ASSIGN_OR_RETURN(buf, ReadCols(g, p + "ffn_down.weight", h, inter, l.mlp_begin, l.mlp_end));
    lw.down = ToMatrix(buf, l.mlp_end - l.mlp_begin);
    w.bytes += (lw.input_norm.size() + lw.post_norm.size()) * sizeof(float) + lw.qkv.bytes.size() +
               lw.o.bytes.size() + lw.gate_up.bytes.size() + lw.down.bytes.size();
    w.layers.push_back(std::move(lw));
  }
  const int64_t vocab = c.vocab_size;
  if (l.first_stage()) {
    std::vector<float> buf;
    RETURN_IF_ERROR(AppendRows(g, "token_embd.weight", vocab, h, 0, vocab, buf));
    w.embedding = ToMatrix(buf, h);
    w.bytes += w.embedding.bytes.size();
  }
  if (l.last_stage()) {
    ASSIGN_OR_RETURN(w.final_norm, ReadVector(g, "output_norm.weight", h));
    const std::string head = c.tie_word_embeddings ? "token_embd.weight" : "output.weight";
    std::vector<float> buf;
    RETURN_IF_ERROR(AppendRows(g, head, vocab, h, l.vocab_begin, l.vocab_end, buf));
    w.lm_head = ToMatrix(buf, h);
    w.bytes += w.final_norm.size() * sizeof(float) + w.lm_head.bytes.size();
  }
  return w;
}

}  // namespace tpserve
