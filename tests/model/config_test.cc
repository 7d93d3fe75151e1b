#include "model/config.h"

#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/test_files.h"

namespace tpserve {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

// Mistral-7B-v0.1's config.json, as published.
Json Mistral7B() {
  return Json::parse(R"({
    "architectures": ["MistralForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": false,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.34.0.dev0",
    "use_cache": true,
    "vocab_size": 32000
  })");
}

// SmolLM2-135M-Instruct's config.json (trimmed of fields the engine ignores).
Json SmolLm2() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05,
    "rope_scaling": null,
    "rope_theta": 100000,
    "tie_word_embeddings": true,
    "torch_dtype": "bfloat16",
    "vocab_size": 49152
  })");
}

absl::StatusOr<ModelConfig> Parse(const Json& j) {
  return ParseModelConfig(j.dump(), "config.json");
}

TEST(ModelConfigTest, ParsesEveryFieldOfMistral7B) {
  absl::StatusOr<ModelConfig> c = Parse(Mistral7B());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kMistral);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->max_position_embeddings, 32768);
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{2});
  EXPECT_EQ(c->torch_dtype, DType::kBF16);
}

TEST(ModelConfigTest, MistralNullSlidingWindowMeansNoWindow) {
  Json j = Mistral7B();
  j["sliding_window"] = nullptr;
  j["rope_theta"] = 1000000.0;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
}

TEST(ModelConfigTest, MistralAbsentSlidingWindowMeansNoWindow) {
  Json j = Mistral7B();
  j.erase("sliding_window");
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, ParsesLlamaWithTiedEmbeddingsAndGqa) {
  absl::StatusOr<ModelConfig> c = Parse(SmolLm2());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->hidden_size, 576);
  EXPECT_EQ(c->num_heads, 9);
  EXPECT_EQ(c->num_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_layers, 30);
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_DOUBLE_EQ(c->rope_theta, 100000.0);
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, LlamaIgnoresSlidingWindowWhateverItHolds) {
  Json j = SmolLm2();
  j["sliding_window"] = 4096;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
  j["sliding_window"] = "nonsense";
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, ExplicitHeadDimWinsOverHiddenSizeOverHeads) {
  Json j = Mistral7B();  // Mistral-Nemo shape: 5120 / 32 = 160, but head_dim is 128
  j["hidden_size"] = 5120;
  j["head_dim"] = 128;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
}

TEST(ModelConfigTest, NullHeadDimIsDerivedFromHiddenSize) {
  Json j = Mistral7B();
  j["head_dim"] = nullptr;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
}

TEST(ModelConfigTest, KvHeadsDefaultToAttentionHeads) {
  Json j = Mistral7B();
  j.erase("num_key_value_heads");
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 32);
}

TEST(ModelConfigTest, EosTokenIdListKeepsEveryId) {
  Json j = SmolLm2();
  j["vocab_size"] = 128256;
  j["eos_token_id"] = {128001, 128008, 128009};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
}

TEST(ModelConfigTest, ModelTypeSelectsArchitectureWhenArchitecturesAbsent) {
  Json j = Mistral7B();
  j.erase("architectures");
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kMistral);
  EXPECT_EQ(c->sliding_window, 4096);
  j["model_type"] = "llama";
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, ArchitecturesWinsOverModelType) {
  Json j = SmolLm2();
  j["model_type"] = "mistral";
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
}

TEST(ModelConfigTest, OptionalFieldsTakeDocumentedDefaults) {
  Json j = Mistral7B();
  for (const char* f : {"rope_theta", "rms_norm_eps", "torch_dtype", "bos_token_id", "eos_token_id",
                        "tie_word_embeddings", "sliding_window"}) {
    j.erase(f);
  }
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_EQ(c->torch_dtype, DType::kF32);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, ParsesEachSupportedTorchDtype) {
  Json j = Mistral7B();
  for (const auto& [name, dtype] : std::vector<std::pair<std::string, DType>>{
           {"float32", DType::kF32}, {"bfloat16", DType::kBF16}, {"float16", DType::kF16}}) {
    j["torch_dtype"] = name;
    absl::StatusOr<ModelConfig> c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->torch_dtype, dtype) << name;
  }
}

TEST(ModelConfigTest, NewerDtypeKeyIsReadWhenTorchDtypeAbsent) {
  Json j = Mistral7B();
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->torch_dtype, DType::kF16);
}

TEST(ModelConfigTest, KvHeadsNotDividingHeadsGivesExactMessage) {
  Json j = Mistral7B();
  j["num_attention_heads"] = 8;
  j["num_key_value_heads"] = 3;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status(),
            absl::InvalidArgumentError("config.json: field \"num_key_value_heads\" (3) must divide "
                                       "num_attention_heads (8)"));
}

TEST(ModelConfigTest, TextThatIsNotJsonIsInvalidArgument) {
  for (const char* text : {"", "{", "{\"hidden_size\": }", "not json", "{} trailing"}) {
    absl::StatusOr<ModelConfig> c = ParseModelConfig(text, "config.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(c.status().message(), HasSubstr("config.json")) << text;
  }
}

TEST(ModelConfigTest, TopLevelThatIsNotAnObjectIsInvalidArgument) {
  for (const char* text : {"[]", "42", "\"config\"", "null"}) {
    absl::StatusOr<ModelConfig> c = ParseModelConfig(text, "config.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(ModelConfigTest, LoadReadsConfigJsonFromFolder) {
  const std::string dir = test::MakeTempDir();
  test::WriteFile(dir + "/config.json", SmolLm2().dump(2));
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 576);
}

TEST(ModelConfigTest, LoadOfFolderWithoutConfigIsNotFound) {
  const std::string dir = test::MakeTempDir();
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

TEST(ModelConfigTest, LoadErrorsNameTheFilePath) {
  const std::string dir = test::MakeTempDir();
  Json j = SmolLm2();
  j["hidden_size"] = "576";
  test::WriteFile(dir + "/config.json", j.dump());
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr(dir + "/config.json"));
  EXPECT_THAT(c.status().message(), HasSubstr("hidden_size"));
}

// Each bad config is Mistral-7B (or SmolLM2) with one change; each must be InvalidArgument
// whose message names the source and the field at fault.
struct BadConfigCase {
  std::string name;
  std::function<void(Json&)> mutate;
  std::string field;      // must appear quoted in the message
  std::string also = "";  // another substring the message must hold
  bool llama = false;     // start from SmolLM2 instead of Mistral-7B
};

void PrintTo(const BadConfigCase& c, std::ostream* os) { *os << c.name; }

class BadConfigTest : public ::testing::TestWithParam<BadConfigCase> {};

TEST_P(BadConfigTest, IsInvalidArgumentNamingSourceAndField) {
  const BadConfigCase& p = GetParam();
  Json j = p.llama ? SmolLm2() : Mistral7B();
  p.mutate(j);
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_FALSE(c.ok()) << "accepted: " << j.dump();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr("config.json: "));
  EXPECT_THAT(c.status().message(), HasSubstr("\"" + p.field + "\"")) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr(p.also)) << c.status();
}

std::vector<BadConfigCase> BadConfigs() {
  std::vector<BadConfigCase> cases = {
      {"UnsupportedArchitecture", [](Json& j) { j["architectures"] = {"GPT2LMHeadModel"}; },
       "architectures", "GPT2"},
      {"ArchitecturesNotAList", [](Json& j) { j["architectures"] = "MistralForCausalLM"; },
       "architectures", "list"},
      {"ArchitecturesHoldsNumber", [](Json& j) { j["architectures"] = {7}; }, "architectures"},
      {"EmptyArchitectures", [](Json& j) { j["architectures"] = Json::array(); }, "architectures"},
      {"NoArchitecturesNorModelType",
       [](Json& j) {
         j.erase("architectures");
         j.erase("model_type");
       },
       "architectures", "model_type"},
      {"UnsupportedModelType",
       [](Json& j) {
         j.erase("architectures");
         j["model_type"] = "gpt2";
       },
       "model_type", "gpt2"},
      {"ModelTypeNotString",
       [](Json& j) {
         j.erase("architectures");
         j["model_type"] = 3;
       },
       "model_type"},
      {"HiddenSizeAsString", [](Json& j) { j["hidden_size"] = "4096"; }, "hidden_size", "integer"},
      {"HiddenSizeAsFraction", [](Json& j) { j["hidden_size"] = 4096.5; }, "hidden_size",
       "integer"},
      {"HiddenSizeBeyondInt", [](Json& j) { j["hidden_size"] = 1ull << 40; }, "hidden_size",
       "out of range"},
      {"HiddenSizeBeyondInt64", [](Json& j) { j["hidden_size"] = ~0ull; }, "hidden_size",
       "out of range"},
      {"HiddenSizeZero", [](Json& j) { j["hidden_size"] = 0; }, "hidden_size", "positive"},
      {"NumLayersAsList", [](Json& j) { j["num_hidden_layers"] = {32}; }, "num_hidden_layers"},
      {"IntermediateSizeNegative", [](Json& j) { j["intermediate_size"] = -1; },
       "intermediate_size", "positive"},
      {"MaxPositionEmbeddingsZero", [](Json& j) { j["max_position_embeddings"] = 0; },
       "max_position_embeddings", "positive"},
      {"MaxPositionEmbeddingsNull", [](Json& j) { j["max_position_embeddings"] = nullptr; },
       "max_position_embeddings", "missing"},
      {"VocabSizeAsBool", [](Json& j) { j["vocab_size"] = true; }, "vocab_size"},
      {"KvHeadsZero", [](Json& j) { j["num_key_value_heads"] = 0; }, "num_key_value_heads",
       "positive"},
      {"KvHeadsMoreThanHeads", [](Json& j) { j["num_key_value_heads"] = 64; },
       "num_key_value_heads", "must divide"},
      {"KvHeadsAsString", [](Json& j) { j["num_key_value_heads"] = "8"; }, "num_key_value_heads"},
      {"HeadsNotDividingHiddenWithoutHeadDim",
       [](Json& j) {
         j["num_attention_heads"] = 30;
         j["num_key_value_heads"] = 10;
       },
       "num_attention_heads", "hidden_size"},
      {"HeadDimZero", [](Json& j) { j["head_dim"] = 0; }, "head_dim", "positive"},
      {"HeadDimAsString", [](Json& j) { j["head_dim"] = "128"; }, "head_dim"},
      {"SlidingWindowNegative", [](Json& j) { j["sliding_window"] = -4096; }, "sliding_window"},
      {"SlidingWindowAsString", [](Json& j) { j["sliding_window"] = "4096"; }, "sliding_window"},
      {"RopeThetaZero", [](Json& j) { j["rope_theta"] = 0; }, "rope_theta"},
      {"RopeThetaAsString", [](Json& j) { j["rope_theta"] = "1e6"; }, "rope_theta", "number"},
      {"RmsNormEpsNegative", [](Json& j) { j["rms_norm_eps"] = -1e-5; }, "rms_norm_eps"},
      {"RmsNormEpsUnderflowsFloat", [](Json& j) { j["rms_norm_eps"] = 1e-300; }, "rms_norm_eps",
       "float"},
      {"TieWordEmbeddingsAsString", [](Json& j) { j["tie_word_embeddings"] = "true"; },
       "tie_word_embeddings", "boolean"},
      {"BosOutsideVocab", [](Json& j) { j["bos_token_id"] = 32000; }, "bos_token_id", "vocab_size"},
      {"BosNegative", [](Json& j) { j["bos_token_id"] = -2; }, "bos_token_id"},
      {"EosOutsideVocab", [](Json& j) { j["eos_token_id"] = 40000; }, "eos_token_id", "vocab_size"},
      {"EosListHoldsString",
       [](Json& j) {
         j["eos_token_id"] = {2, "3"};
       },
       "eos_token_id"},
      {"EosAsObject",
       [](Json& j) {
         j["eos_token_id"] = {{"id", 2}};
       },
       "eos_token_id"},
      {"TorchDtypeUnknown", [](Json& j) { j["torch_dtype"] = "int8"; }, "torch_dtype", "int8"},
      {"TorchDtypeNotString", [](Json& j) { j["torch_dtype"] = 16; }, "torch_dtype"},
      {"LlamaHeadDimNegative", [](Json& j) { j["head_dim"] = -64; }, "head_dim", "", true},
      {"LlamaKvHeadsNotDividing", [](Json& j) { j["num_key_value_heads"] = 2; },
       "num_key_value_heads", "(2) must divide num_attention_heads (9)", true},
  };
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size", "max_position_embeddings"}) {
    std::string name = "Missing_" + std::string(field);
    cases.push_back({name, [field](Json& j) { j.erase(field); }, field, "missing"});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(EveryError, BadConfigTest, ::testing::ValuesIn(BadConfigs()),
                         [](const ::testing::TestParamInfo<BadConfigCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace tpserve

namespace tpserve {
namespace {

constexpr char kBase[] = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
  "vocab_size": 100, "max_position_embeddings": 64)";

TEST(ConfigRopeTest, RopeThetaInsideRopeParametersIsRead) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(
      std::string(kBase) + R"(, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}})",
      "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 500000.0);
}

TEST(ConfigRopeTest, RopeScalingIsRefusedNotIgnored) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(
      std::string(kBase) + R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})", "config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("rope_scaling"), std::string_view::npos);
  absl::StatusOr<ModelConfig> plain =
      ParseModelConfig(std::string(kBase) + R"(, "rope_scaling": null})", "config.json");
  EXPECT_TRUE(plain.ok()) << plain.status();
}

}  // namespace
}  // namespace tpserve
