// Proves LoadShardWeights from a GGUF file gives, rank by rank, the weights the safetensors
// loader gives for the same model (tests/data/tiny-llama and its GGUF conversions by
// make_gguf_model.py): exactly for the F32 file, within Q8_0's rounding for the Q8_0 file.
// Equality on attn_q / attn_k also proves llama.cpp's RoPE row permutation is undone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/gguf.h"
#include "model/gguf_config.h"
#include "worker/layout.h"
#include "worker/shard_weights.h"

namespace tpserve {
namespace {

const std::string kData = TPSERVE_TEST_DATA_DIR;

std::vector<float> AsF32(const OwnedMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.view.rows * m.view.cols));
  ConvertToF32(m.view.dtype, m.view.data, out.data(), out.size());
  return out;
}

// max |got - want| / max |want|; the shapes must agree.
double MatrixError(const OwnedMatrix& got, const OwnedMatrix& want, const std::string& what) {
  EXPECT_EQ(got.view.dtype, DType::kF32) << what;
  EXPECT_EQ(got.view.rows, want.view.rows) << what;
  EXPECT_EQ(got.view.cols, want.view.cols) << what;
  const std::vector<float> a = AsF32(got), b = AsF32(want);
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / scale;
}

struct Case {
  int tp, pp, rank;
};

void ExpectSameShards(const std::string& gguf_file, double tolerance) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kData + "/tiny-llama");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<ModelConfig> hf_config = LoadModelConfig(kData + "/tiny-llama");
  ASSERT_TRUE(hf_config.ok());
  absl::StatusOr<std::unique_ptr<GgufModel>> gguf = OpenGguf(gguf_file);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<ModelConfig> config = ModelConfigFromGguf((*gguf)->file(), gguf_file);
  ASSERT_TRUE(config.ok()) << config.status();
  // tp 2 splits q (4 heads) and k (2 heads) one head group per rank; tp 4 replicates KV heads.
  for (const Case& k : {Case{1, 1, 0}, Case{2, 1, 0}, Case{2, 1, 1}, Case{4, 1, 3}, Case{2, 2, 3}}) {
    const std::string where = "tp" + std::to_string(k.tp) + " pp" + std::to_string(k.pp) +
                              " rank " + std::to_string(k.rank);
    absl::StatusOr<Layout> l = MakeLayout(*config, k.tp, k.pp, k.tp * k.pp, k.rank, {});
    ASSERT_TRUE(l.ok()) << l.status();
    absl::StatusOr<ShardWeights> want = LoadShardWeights(**ckpt, *hf_config, *l);
    ASSERT_TRUE(want.ok()) << want.status();
    absl::StatusOr<ShardWeights> got = LoadShardWeights(**gguf, *config, *l);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->layers.size(), want->layers.size());
    for (size_t i = 0; i < got->layers.size(); ++i) {
      const LayerWeights &g = got->layers[i], &w = want->layers[i];
      const std::string at = where + " layer " + std::to_string(l->layer_begin + i);
      EXPECT_EQ(g.input_norm, w.input_norm) << at;  // norms stay F32 in both files
      EXPECT_EQ(g.post_norm, w.post_norm) << at;
      EXPECT_LE(MatrixError(g.qkv, w.qkv, at + " qkv"), tolerance) << at;
      EXPECT_LE(MatrixError(g.o, w.o, at + " o"), tolerance) << at;
      EXPECT_LE(MatrixError(g.gate_up, w.gate_up, at + " gate_up"), tolerance) << at;
      EXPECT_LE(MatrixError(g.down, w.down, at + " down"), tolerance) << at;
    }
    if (l->first_stage()) {
      EXPECT_LE(MatrixError(got->embedding, want->embedding, where + " embedding"), tolerance);
    }
    if (l->last_stage()) {
      EXPECT_EQ(got->final_norm, want->final_norm) << where;
      EXPECT_LE(MatrixError(got->lm_head, want->lm_head, where + " lm_head"), tolerance);
    }
  }
}

TEST(ShardWeightsGgufTest, F32FileGivesExactlyTheSafetensorsShards) {
  ExpectSameShards(kData + "/tiny-llama-gguf/model.gguf", 0.0);
}

// Q8_0 stores each 32-value block as int8 times an F16 scale of absmax / 127: half a step
// plus the scale's F16 rounding (up to 127 * 2^-11 of a step) stays under one step, absmax /
// 127. A rank's column slice of o / down may not hold its blocks' absmax, so the bound is
// relative to the whole-row block maximum and measured here against the slice: one step,
// 1/127 of the largest |w| (a mis-ordered q/k row would be off by O(1)).
TEST(ShardWeightsGgufTest, Q8FileGivesTheSafetensorsShardsWithinQuantisationError) {
  ExpectSameShards(kData + "/tiny-llama-gguf-q8/model-q8_0.gguf", 1.0 / 127);
}

TEST(ShardWeightsGgufTest, QkRowsAreUnpermutedSoLeavingThemPermutedWouldDiffer) {
  // Guards the test above against a permutation that happens to be the identity on this data:
  // the raw attn_q rows of layer 0 in the file differ from HF's q_proj rows.
  absl::StatusOr<std::unique_ptr<GgufModel>> gguf = OpenGguf(kData + "/tiny-llama-gguf/model.gguf");
  ASSERT_TRUE(gguf.ok());
  const GgufTensorInfo* q = (*gguf)->file().FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  std::vector<float> raw(q->NumElements()), unpermuted(raw.size());
  ASSERT_TRUE((*gguf)->ReadRows(*q, 0, q->NumRows(), raw.data()).ok());
  UnpermuteGgufQkRows(raw.data(), 4, 16, 64, unpermuted.data());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kData + "/tiny-llama");
  ASSERT_TRUE(ckpt.ok());
  std::vector<uint16_t> bf16(raw.size());
  ASSERT_TRUE((*ckpt)->ReadSlice("model.layers.0.self_attn.q_proj.weight", {64, 64},
                                 Slice2D{0, 64, 0, 64}, bf16.data()).ok());
  std::vector<float> hf(raw.size());
  ConvertToF32(DType::kBF16, bf16.data(), hf.data(), hf.size());
  EXPECT_EQ(unpermuted, hf);
  EXPECT_NE(raw, hf);
}

}  // namespace
}  // namespace tpserve
