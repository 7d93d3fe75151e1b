// Byte-level BPE loaded from GGUF metadata (tests/data/smollm2-tokenizer/tokenizer.gguf: the
// tokenizer.* keys of SmolLM2-135M-Instruct.Q4_1.gguf, make_tokenizer_gguf.py), its streaming
// detokeniser, and Tokenizer::LoadForModel's choice of tokenizer for a model folder.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bpe_pretokenizer.h"
#include "model/bpe_tokenizer.h"
#include "model/gguf.h"
#include "model/model_folder.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

using ::testing::HasSubstr;

const std::string kDir = std::string(TPSERVE_TEST_DATA_DIR) + "/smollm2-tokenizer";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

GgufFile TokenizerGguf() {
  static const std::string* bytes = new std::string(ReadFile(kDir + "/tokenizer.gguf"));
  absl::StatusOr<GgufFile> f = ParseGguf(*bytes, "tokenizer.gguf");
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : GgufFile{};
}

std::unique_ptr<BpeTokenizer> LoadGgufOrDie() {
  auto tok = BpeTokenizer::LoadFromGguf(TokenizerGguf(), "tokenizer.gguf");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

TEST(BpeGgufTokenizerTest, EncodesEveryGoldenStringAsHuggingFaceWithDigitSplitting) {
  // llama.cpp's "smollm" pre-tokenizer isolates each digit, as SmolLM2's own tokenizer.json.
  auto tok = LoadGgufOrDie();
  ASSERT_NE(tok, nullptr);
  const auto j = nlohmann::json::parse(ReadFile(kDir + "/golden.json"));
  int checked = 0, mismatches = 0;
  for (const auto& c : j.at("cases")) {
    const auto want = c.contains("digit_ids") ? c["digit_ids"].get<std::vector<int32_t>>()
                                              : c.at("ids").get<std::vector<int32_t>>();
    const std::string text = c.at("text").get<std::string>();
    ++checked;
    if (tok->Encode(text, false) != want && ++mismatches <= 5) {
      ADD_FAILURE() << "differs from HF: " << nlohmann::json(text).dump();
    }
    if (tok->Decode(tok->Encode(text, false)) != text && ++mismatches <= 5) {
      ADD_FAILURE() << "does not round-trip: " << nlohmann::json(text).dump();
    }
  }
  EXPECT_GE(checked, 1000);
  EXPECT_EQ(mismatches, 0);
}

TEST(BpeGgufTokenizerTest, ControlTokensSpecialIdsAndNoBos) {
  auto tok = LoadGgufOrDie();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);  // <|im_end|>
  const std::vector<int32_t> ids = tok->Encode("<|im_start|>user\nhi<|im_end|>", true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 1);  // <|im_start|>, not a BOS: add_bos_token is false
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tok->Encode("hi", true), tok->Encode("hi", false));
}

GgufFile WithMetadata(GgufFile f, const std::string& key, GgufValue v) {
  f.metadata[key] = std::move(v);
  return f;
}

TEST(BpeGgufTokenizerTest, LlamaBpePreTokenizerSplitsAsLlama3) {
  // The same vocabulary with pre = "llama-bpe" must give HF's ids for Llama 3's pre_tokenizer
  // (make_llama3_bpe_golden.py).
  auto tok = BpeTokenizer::LoadFromGguf(
      WithMetadata(TokenizerGguf(), "tokenizer.ggml.pre", GgufValue::String("llama-bpe")), "x");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto golden = nlohmann::json::parse(
      ReadFile(std::string(TPSERVE_TEST_DATA_DIR) + "/llama3-pretok-golden.json"));
  int mismatches = 0;
  for (const auto& c : golden.at("cases")) {
    if ((*tok)->Encode(c.at("text").get<std::string>(), false) !=
        c.at("ids").get<std::vector<int32_t>>()) {
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(BpeGgufTokenizerTest, BadMetadataIsInvalidArgumentNamingTheKey) {
  const GgufFile good = TokenizerGguf();
  struct Bad {
    GgufFile file;
    std::string want;
  };
  GgufFile no_tokens = good;
  no_tokens.metadata.erase("tokenizer.ggml.tokens");
  std::vector<Bad> cases = {
      {WithMetadata(good, "tokenizer.ggml.model", GgufValue::String("llama")), "tokenizer.ggml.model"},
      {WithMetadata(good, "tokenizer.ggml.pre", GgufValue::String("qwen2")), "qwen2"},
      {no_tokens, "tokenizer.ggml.tokens: missing"},
      {WithMetadata(good, "tokenizer.ggml.merges",
                    GgufValue::Array(GgufValue::Type::kString, {GgufValue::String("nospace")})),
       "bad merge nospace"},
      {WithMetadata(good, "tokenizer.ggml.merges",
                    GgufValue::Array(GgufValue::Type::kString, {GgufValue::String("zzzq qqqz")})),
       "not in the vocabulary"},
      {WithMetadata(good, "tokenizer.ggml.eos_token_id",
                    GgufValue::Unsigned(GgufValue::Type::kUint32, 60000)),
       "outside the vocabulary"},
      {WithMetadata(good, "tokenizer.ggml.token_type",
                    GgufValue::Array(GgufValue::Type::kInt32, {})),
       "tokenizer.ggml.token_type"},
  };
  for (const Bad& c : cases) {
    auto tok = BpeTokenizer::LoadFromGguf(c.file, "x.gguf");
    ASSERT_FALSE(tok.ok()) << c.want;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tok.status().message(), HasSubstr("x.gguf"));
    EXPECT_THAT(tok.status().message(), HasSubstr(c.want));
  }
}

TEST(BpeStreamTest, RandomIdSequencesStreamToTheirValidUtf8Decode) {
  auto tok = LoadGgufOrDie();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(7);
  // Mostly single-byte tokens (ids 17..272 hold the byte alphabet), so characters split often.
  std::uniform_int_distribution<int32_t> byte_ids(17, 272), any_id(0, 49151);
  for (int round = 0; round < 300; ++round) {
    std::vector<int32_t> ids;
    IncrementalDetokenizer detok(*tok, {});
    std::string streamed;
    for (int i = 0; i < 40; ++i) {
      ids.push_back(rng() % 3 == 0 ? any_id(rng) : byte_ids(rng));
      const std::string piece = detok.Push(ids.back());
      EXPECT_EQ(internal::ToValidUtf8(piece), piece);
      streamed += piece;
    }
    streamed += detok.Flush();
    ASSERT_EQ(streamed, internal::ToValidUtf8(tok->Decode(ids))) << "round " << round;
  }
}

TEST(BpeStreamTest, HoldsAnEmojiUntilItsLastByteAndCompletesAPromptsCharacter) {
  auto tok = LoadGgufOrDie();
  ASSERT_NE(tok, nullptr);
  const std::string emoji = "\xF0\x9F\x98\x80";
  std::vector<int32_t> bytes;
  // Invalid UTF-8 alone encodes as U+FFFD, so look the byte tokens up by decoding instead.
  for (char c : emoji) {
    for (int32_t id = 0; id < tok->vocab_size(); ++id) {
      if (tok->Decode({id}) == std::string(1, c)) {
        bytes.push_back(id);
        break;
      }
    }
  }
  ASSERT_EQ(bytes.size(), 4u);
  IncrementalDetokenizer detok(*tok, tok->Encode("Hi ", false));
  EXPECT_EQ(detok.Push(bytes[0]), "");
  EXPECT_EQ(detok.Push(bytes[1]), "");
  EXPECT_EQ(detok.Push(bytes[2]), "");
  EXPECT_EQ(detok.Push(bytes[3]), emoji);
  // A prompt ending inside the character: the stream completes it.
  IncrementalDetokenizer cont(*tok, {bytes[0], bytes[1]});
  EXPECT_EQ(cont.Push(bytes[2]), "");
  EXPECT_EQ(cont.Push(bytes[3]), emoji);
  // Flush renders an unfinished character byte by byte as U+FFFD.
  IncrementalDetokenizer cut(*tok, {});
  EXPECT_EQ(cut.Push(bytes[0]), "");
  EXPECT_EQ(cut.Push(bytes[1]), "");
  EXPECT_EQ(cut.Flush(), "\uFFFD\uFFFD");
}

class LoadForModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/load_for_model_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_.vocab_size = 49152;
    config_.bos_token_id = 1;
    config_.eos_token_ids = {2};
  }
  std::string dir_;
  ModelConfig config_;
};

TEST_F(LoadForModelTest, GgufFolderGivesTheGgufTokenizer) {
  std::filesystem::copy_file(kDir + "/tokenizer.gguf", dir_ + "/model.gguf");
  auto tok = Tokenizer::LoadForModel(dir_, config_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("12", false).size(), 2u);  // the GGUF's digit splitting
  EXPECT_EQ((*tok)->eos_id(), 2);
}

TEST_F(LoadForModelTest, TokenizerJsonTakesSpecialIdsFromConfig) {
  std::filesystem::copy_file(kDir + "/tokenizer.json", dir_ + "/tokenizer.json");
  config_.bos_token_id = 0;
  config_.eos_token_ids = {2, 0};
  auto tok = Tokenizer::LoadForModel(dir_, config_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 0);
  EXPECT_EQ((*tok)->eos_id(), 2);
}

TEST_F(LoadForModelTest, NoTokenizerIsNotFoundAndATooSmallModelVocabIsInvalid) {
  auto none = Tokenizer::LoadForModel(dir_, config_);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  std::filesystem::copy_file(kDir + "/tokenizer.json", dir_ + "/tokenizer.json");
  config_.vocab_size = 1000;
  auto small = Tokenizer::LoadForModel(dir_, config_);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small.status().message(), HasSubstr("vocab_size is 1000"));
}

TEST_F(LoadForModelTest, InspectReadsTheChatTemplateOfTokenizerConfig) {
  std::ofstream(dir_ + "/tokenizer_config.json") << R"({"chat_template": "{{ x }}"})";
  std::ofstream(dir_ + "/config.json")
      << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 64})";
  auto info = InspectModelFolder(dir_);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->chat_template, "{{ x }}");
  EXPECT_FALSE(info->gguf_path.has_value());
  std::ofstream(dir_ + "/tokenizer_config.json") << R"({"chat_template": [{"name": "a"}]})";
  EXPECT_EQ(InspectModelFolder(dir_).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tpserve
