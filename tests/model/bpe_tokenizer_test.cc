// Byte-level BPE tokenizer against Hugging Face: the committed SmolLM2 tokenizer.json and the
// ids HF gives for ~1000 varied strings (tests/data/make_bpe_golden.py).
#include "model/bpe_tokenizer.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

const std::string kDir = std::string(TPSERVE_TEST_DATA_DIR) + "/smollm2-tokenizer";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + "/bpe_test_" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

// JSON-style quoting that also survives bytes that are not UTF-8.
std::string Escaped(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Ids(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<int32_t> digit_ids;
};

std::vector<Case> Golden() {
  const auto j = nlohmann::json::parse(ReadFile(kDir + "/golden.json"));
  std::vector<Case> cases;
  for (const auto& c : j.at("cases")) {
    Case k{c.at("text").get<std::string>(), c.at("ids").get<std::vector<int32_t>>(), {}};
    k.digit_ids = c.contains("digit_ids") ? c["digit_ids"].get<std::vector<int32_t>>() : k.ids;
    cases.push_back(std::move(k));
  }
  return cases;
}

std::unique_ptr<BpeTokenizer> LoadOrDie(const std::string& path) {
  auto tok = BpeTokenizer::LoadTokenizerJson(path);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

// Counts cases where Encode differs from `expected` and describes the first few.
void ExpectAllMatch(const BpeTokenizer& tok, const std::vector<Case>& cases, bool digits) {
  int mismatches = 0;
  std::string first;
  for (const Case& c : cases) {
    const std::vector<int32_t>& want = digits ? c.digit_ids : c.ids;
    const std::vector<int32_t> got = tok.Encode(c.text, false);
    if (got == want) continue;
    if (++mismatches <= 5) {
      first += "\n  " + Escaped(c.text) + "\n    HF:   " + Ids(want) + "\n    ours: " + Ids(got);
    }
  }
  EXPECT_EQ(mismatches, 0) << mismatches << " of " << cases.size()
                           << " golden strings encode differently from HF; first:" << first;
}

TEST(BpeTokenizerTest, GoldenFileIsLargeAndVaried) {
  const std::vector<Case> cases = Golden();
  EXPECT_GE(cases.size(), 1000u);
  int with_special = 0;
  for (const Case& c : cases) with_special += c.text.find("<|im_") != std::string::npos;
  EXPECT_GT(with_special, 5);
}

TEST(BpeTokenizerTest, EncodeMatchesHuggingFaceOnEveryGoldenString) {
  auto tok = LoadOrDie(kDir + "/tokenizer.json");
  ASSERT_NE(tok, nullptr);
  ExpectAllMatch(*tok, Golden(), /*digits=*/false);
}

TEST(BpeTokenizerTest, DigitsPreTokenizerMatchesHuggingFace) {
  // The original SmolLM2 tokenizer.json splits digits individually before ByteLevel.
  auto j = nlohmann::json::parse(ReadFile(kDir + "/tokenizer.json"));
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, j["pre_tokenizer"]}}};
  auto tok = LoadOrDie(WriteTemp("digits.json", j.dump()));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("12345", false).size(), 5u);
  ExpectAllMatch(*tok, Golden(), /*digits=*/true);
}

TEST(BpeTokenizerTest, DigitsPreTokenizerVariantsSplitAsHuggingFace) {
  using internal::DigitSplit;
  using V = std::vector<std::string_view>;
  // HF: Digits isolates (runs of) numbers, then the GPT-2 pattern splits what lies between.
  EXPECT_EQ(internal::SplitGpt2("a 123b", DigitSplit::kNone), (V{"a", " 123", "b"}));
  EXPECT_EQ(internal::SplitGpt2("a 123b", DigitSplit::kRuns), (V{"a", " ", "123", "b"}));
  EXPECT_EQ(internal::SplitGpt2("a 123b", DigitSplit::kIndividual),
            (V{"a", " ", "1", "2", "3", "b"}));
  EXPECT_EQ(internal::SplitGpt2("x  \u0663\u0664 y", DigitSplit::kRuns),
            (V{"x", "  ", "\u0663\u0664", " y"}));  // checked with tokenizers 0.23
  EXPECT_TRUE(internal::IsUnicodeNumber(U'\u0663'));
  EXPECT_TRUE(internal::IsUnicodeLetter(U'\u4E2D'));
  EXPECT_FALSE(internal::IsUnicodeLetter(U'\u0301'));  // combining mark: not \p{L}
}

TEST(BpeTokenizerTest, Llama3PatternSplitsAsTheRegexModule) {
  const auto j = nlohmann::json::parse(ReadFile(std::string(TPSERVE_TEST_DATA_DIR) +
                                                "/llama3-split-golden.json"));
  int checked = 0, mismatches = 0;
  for (const auto& c : j.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const auto want = c.at("pieces").get<std::vector<std::string>>();
    std::vector<std::string> got;
    for (std::string_view piece : internal::SplitLlama3(text)) got.emplace_back(piece);
    ++checked;
    if (got != want && ++mismatches <= 5) {
      ADD_FAILURE() << Escaped(text) << "\n  regex: " << nlohmann::json(want).dump()
                    << "\n  ours:  " << nlohmann::json(got).dump();
    }
  }
  EXPECT_GE(checked, 1500);
  EXPECT_EQ(mismatches, 0);
}

TEST(BpeTokenizerTest, Llama3PreTokenizerInTokenizerJsonMatchesHuggingFace) {
  // SmolLM2's vocabulary with Llama 3's pre_tokenizer (make_llama3_bpe_golden.py).
  auto j = nlohmann::json::parse(ReadFile(kDir + "/tokenizer.json"));
  const std::string pattern =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  auto tok = LoadOrDie(WriteTemp("llama3.json", j.dump()));
  ASSERT_NE(tok, nullptr);
  const auto golden = nlohmann::json::parse(
      ReadFile(std::string(TPSERVE_TEST_DATA_DIR) + "/llama3-pretok-golden.json"));
  int checked = 0, mismatches = 0;
  for (const auto& c : golden.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<int32_t>>();
    ++checked;
    if (tok->Encode(text, false) != want && ++mismatches <= 5) {
      ADD_FAILURE() << Escaped(text) << "\n  HF:   " << Ids(want)
                    << "\n  ours: " << Ids(tok->Encode(text, false));
    }
  }
  EXPECT_GE(checked, 1500);
  EXPECT_EQ(mismatches, 0);
  // A pattern that differs by one character is refused, not approximated.
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern + "x";
  auto other = BpeTokenizer::LoadTokenizerJson(WriteTemp("llama3x.json", j.dump()));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BpeTokenizerTest, DecodeInvertsEncode) {
  auto tok = LoadOrDie(kDir + "/tokenizer.json");
  ASSERT_NE(tok, nullptr);
  std::vector<Case> cases = Golden();
  cases.push_back({std::string(3000, ' ') + "x" + std::string(500, '!'), {}, {}});
  int failures = 0;
  for (const Case& c : cases) {
    const std::string back = tok->Decode(tok->Encode(c.text, false));
    if (back != c.text && ++failures <= 5) {
      ADD_FAILURE() << Escaped(c.text) << " decodes back as " << Escaped(back);
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(BpeTokenizerTest, InvalidUtf8BytesEncodeAsReplacementCharacters) {
  auto tok = LoadOrDie(kDir + "/tokenizer.json");
  ASSERT_NE(tok, nullptr);
  const std::string bad = "a\xff\xfe b\xc3 \xe2\x82!\xed\xa0\x80";
  const std::string fixed =
      "a\uFFFD\uFFFD b\uFFFD \uFFFD\uFFFD!\uFFFD\uFFFD\uFFFD";  // surrogates are invalid too
  EXPECT_EQ(tok->Encode(bad, false), tok->Encode(fixed, false));
  EXPECT_EQ(tok->Decode(tok->Encode(bad, false)), fixed);
}

TEST(BpeTokenizerTest, VeryLongRunsRoundTrip) {
  // One pre-token of 300k letters: a quadratic merge loop would not finish here.
  auto tok = LoadOrDie(kDir + "/tokenizer.json");
  ASSERT_NE(tok, nullptr);
  const std::string text = std::string(300000, 'a') + std::string(100000, ' ') + "b";
  const std::vector<int32_t> ids = tok->Encode(text, false);
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ(tok->Decode(ids), text);
}

TEST(BpeTokenizerTest, DecodeSkipsIdsOutsideTheVocabulary) {
  auto tok = LoadOrDie(kDir + "/tokenizer.json");
  ASSERT_NE(tok, nullptr);
  std::vector<int32_t> ids = tok->Encode("Hello", false);
  ids.insert(ids.begin(), -1);
  ids.push_back(tok->vocab_size());
  EXPECT_EQ(tok->Decode(ids), "Hello");
}

TEST(BpeTokenizerTest, TokenIdFindsAddedAndVocabularyTokens) {
  auto tok = LoadOrDie(kDir + "/tokenizer.json");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->TokenId("<|endoftext|>"), 0);
  EXPECT_EQ(tok->TokenId("<|im_start|>"), 1);
  EXPECT_EQ(tok->TokenId("<|im_end|>"), 2);
  EXPECT_EQ(tok->TokenId("<|nope|>"), -1);
  const int32_t the = tok->TokenId("\xc4\xa0the");  // "Ġthe"
  ASSERT_GE(the, 0);
  EXPECT_EQ(tok->Encode(" the", false), std::vector<int32_t>{the});
  EXPECT_EQ(tok->Encode("<|im_start|>", false), std::vector<int32_t>{1});
}

TEST(BpeTokenizerTest, AddSpecialBosFollowsThePostProcessor) {
  auto tok = LoadOrDie(kDir + "/tokenizer.json");
  ASSERT_NE(tok, nullptr);
  // SmolLM2's TemplateProcessing adds nothing, as HF's add_special_tokens=True.
  EXPECT_EQ(tok->Encode("Hi", true), tok->Encode("Hi", false));

  auto j = nlohmann::json::parse(ReadFile(kDir + "/tokenizer.json"));
  j["post_processor"]["single"] = nlohmann::json::parse(
      R"([{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
          {"Sequence": {"id": "A", "type_id": 0}},
          {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}}])");
  j["post_processor"]["special_tokens"] = nlohmann::json::parse(
      R"({"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]},
          "<|im_end|>": {"id": "<|im_end|>", "ids": [2], "tokens": ["<|im_end|>"]}})");
  auto with_bos = LoadOrDie(WriteTemp("bos.json", j.dump()));
  ASSERT_NE(with_bos, nullptr);
  std::vector<int32_t> want = tok->Encode("Hi", false);
  want.insert(want.begin(), 1);
  EXPECT_EQ(with_bos->Encode("Hi", true), want);
  EXPECT_EQ(with_bos->Encode("", true), std::vector<int32_t>{1});
  EXPECT_EQ(with_bos->Encode("", false), std::vector<int32_t>{});
}

TEST(BpeTokenizerTest, MissingFileIsNotFound) {
  auto tok = BpeTokenizer::LoadTokenizerJson(::testing::TempDir() + "/no_such_tokenizer.json");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
}

void ExpectInvalidNamingPath(const std::string& path) {
  auto tok = BpeTokenizer::LoadTokenizerJson(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  EXPECT_NE(std::string(tok.status().message()).find(path), std::string::npos) << tok.status();
}

TEST(BpeTokenizerTest, BadFilesAreInvalidArgumentNamingThePath) {
  ExpectInvalidNamingPath(WriteTemp("not_json.json", "{\"model\": [1, 2"));
  ExpectInvalidNamingPath(WriteTemp("empty.json", ""));
  ExpectInvalidNamingPath(WriteTemp("array.json", "[1, 2, 3]"));
  ExpectInvalidNamingPath(::testing::TempDir());  // a directory
  ExpectInvalidNamingPath(
      WriteTemp("wordpiece.json", R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})"));
  ExpectInvalidNamingPath(WriteTemp(
      "bad_vocab.json", R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})"));
  ExpectInvalidNamingPath(
      WriteTemp("bad_merge.json",
                R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "b"]]}})"));

  auto j = nlohmann::json::parse(ReadFile(kDir + "/tokenizer.json"));
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  ExpectInvalidNamingPath(WriteTemp("whitespace_pre.json", j.dump()));
}

}  // namespace
}  // namespace tpserve
