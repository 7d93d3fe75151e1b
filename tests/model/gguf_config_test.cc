// ModelConfigFromGguf, FindModelGguf and the q/k row permutation, against the committed
// tests/data/tiny-llama-gguf (made from tests/data/tiny-llama by make_gguf_model.py).
#include "model/gguf_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "model/config.h"
#include "model/gguf.h"

namespace tpserve {
namespace {

const std::string kData = TPSERVE_TEST_DATA_DIR;

std::unique_ptr<GgufModel> OpenTiny() {
  absl::StatusOr<std::unique_ptr<GgufModel>> g = OpenGguf(kData + "/tiny-llama-gguf/model.gguf");
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : nullptr;
}

TEST(GgufConfigTest, LlamaMetadataGivesTheSameConfigAsTheHuggingFaceFolder) {
  std::unique_ptr<GgufModel> g = OpenTiny();
  ASSERT_NE(g, nullptr);
  absl::StatusOr<ModelConfig> got = ModelConfigFromGguf(g->file(), "tiny.gguf");
  ASSERT_TRUE(got.ok()) << got.status();
  absl::StatusOr<ModelConfig> want = LoadModelConfig(kData + "/tiny-llama");
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(got->architecture, Architecture::kLlama);
  EXPECT_EQ(got->hidden_size, want->hidden_size);
  EXPECT_EQ(got->intermediate_size, want->intermediate_size);
  EXPECT_EQ(got->num_layers, want->num_layers);
  EXPECT_EQ(got->num_heads, want->num_heads);
  EXPECT_EQ(got->num_kv_heads, want->num_kv_heads);
  EXPECT_EQ(got->head_dim, want->head_dim);
  EXPECT_FLOAT_EQ(got->rms_norm_eps, want->rms_norm_eps);
  EXPECT_DOUBLE_EQ(got->rope_theta, want->rope_theta);
  EXPECT_EQ(got->max_position_embeddings, want->max_position_embeddings);
  EXPECT_EQ(got->vocab_size, want->vocab_size);
  EXPECT_TRUE(got->tie_word_embeddings);
  EXPECT_EQ(got->bos_token_id, want->bos_token_id);
  EXPECT_EQ(got->eos_token_ids, want->eos_token_ids);
  EXPECT_EQ(got->torch_dtype, DType::kF32);
}

TEST(GgufConfigTest, OptionalKeysFallBackAndVocabComesFromTheEmbedding) {
  std::unique_ptr<GgufModel> g = OpenTiny();
  ASSERT_NE(g, nullptr);
  GgufFile f = g->file();
  for (const char* key : {"llama.vocab_size", "llama.attention.key_length",
                          "llama.attention.head_count_kv", "llama.rope.freq_base"}) {
    f.metadata.erase(key);
  }
  absl::StatusOr<ModelConfig> c = ModelConfigFromGguf(f, "x.gguf");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 301);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
}

TEST(GgufConfigTest, ErrorsNameTheFileAndTheKey) {
  std::unique_ptr<GgufModel> g = OpenTiny();
  ASSERT_NE(g, nullptr);
  for (const char* key : {"llama.block_count", "llama.embedding_length", "llama.context_length",
                          "llama.feed_forward_length", "llama.attention.head_count",
                          "llama.attention.layer_norm_rms_epsilon", "general.architecture"}) {
    GgufFile f = g->file();
    f.metadata.erase(key);
    absl::StatusOr<ModelConfig> c = ModelConfigFromGguf(f, "x.gguf");
    ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_NE(c.status().message().find(std::string("\"") + key + "\""), std::string::npos)
        << c.status();
    EXPECT_NE(c.status().message().find("x.gguf"), std::string::npos) << c.status();
  }
  GgufFile f = g->file();
  f.metadata["general.architecture"] = GgufValue::String("qwen2");
  EXPECT_NE(ModelConfigFromGguf(f, "x.gguf").status().message().find("qwen2"), std::string::npos);
  f = g->file();
  f.metadata["llama.attention.head_count_kv"] = GgufValue::Unsigned(GgufValue::Type::kUint32, 3);
  EXPECT_EQ(ModelConfigFromGguf(f, "x.gguf").status().code(), absl::StatusCode::kInvalidArgument);
  f = g->file();
  f.metadata["llama.block_count"] = GgufValue::String("4");
  EXPECT_NE(ModelConfigFromGguf(f, "x.gguf").status().message().find("not an integer"),
            std::string::npos);
  f = g->file();
  f.metadata["llama.rope.scaling.type"] = GgufValue::String("linear");
  EXPECT_EQ(ModelConfigFromGguf(f, "x.gguf").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GgufConfigTest, FindModelGgufPicksTheOnlyGgufOfAFolderWithoutConfigJson) {
  absl::StatusOr<std::optional<std::string>> hf = FindModelGguf(kData + "/tiny-llama");
  ASSERT_TRUE(hf.ok());
  EXPECT_FALSE(hf->has_value());
  absl::StatusOr<std::optional<std::string>> one = FindModelGguf(kData + "/tiny-llama-gguf");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(one->has_value());
  EXPECT_EQ(std::filesystem::path(**one).filename(), "model.gguf");

  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("gguf_config_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a.gguf") << "x";
  std::ofstream(dir / "b.gguf") << "x";
  absl::StatusOr<std::optional<std::string>> two = FindModelGguf(dir.string());
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(two.status().message().find("b.gguf"), std::string::npos) << two.status();
  std::ofstream(dir / "config.json") << "{}";
  two = FindModelGguf(dir.string());
  ASSERT_TRUE(two.ok());
  EXPECT_FALSE(two->has_value());  // config.json wins: a Hugging Face folder
  std::filesystem::remove_all(dir);
}

TEST(GgufQkPermutationTest, MatchesLlamaCppAndUnpermuteIsItsInverse) {
  const int64_t heads = 3, head_dim = 4, cols = 2;
  std::vector<float> hf(heads * head_dim * cols);
  std::iota(hf.begin(), hf.end(), 0.0f);
  std::vector<float> gguf(hf.size()), back(hf.size());
  PermuteQkRowsToGguf(hf.data(), heads, head_dim, cols, gguf.data());
  // numpy: w.reshape(heads, 2, head_dim/2, cols).swapaxes(1, 2): per head rows 0, 2, 1, 3.
  const int order[4] = {0, 2, 1, 3};
  for (int64_t h = 0; h < heads; ++h) {
    for (int r = 0; r < 4; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        EXPECT_EQ(gguf[(h * head_dim + r) * cols + c], hf[(h * head_dim + order[r]) * cols + c]);
      }
    }
  }
  EXPECT_NE(gguf, hf);
  UnpermuteGgufQkRows(gguf.data(), heads, head_dim, cols, back.data());
  EXPECT_EQ(back, hf);
  // Heads are independent: unpermuting only the last head gives its HF rows.
  std::vector<float> last(head_dim * cols);
  UnpermuteGgufQkRows(gguf.data() + 2 * head_dim * cols, 1, head_dim, cols, last.data());
  EXPECT_EQ(last, std::vector<float>(hf.begin() + 2 * head_dim * cols, hf.end()));
}

}  // namespace
}  // namespace tpserve
