// Tokenizer and IncrementalDetokenizer on the tiny SentencePiece model of the test checkpoints,
// against tests/data/tokenizer_golden.json (Hugging Face's slow LlamaTokenizer, legacy=True,
// written by tests/data/make_tokenizer.py). The model has 301 pieces, 256 of them bytes, so
// most non-English text goes through byte fallback.
#include "model/tokenizer.h"

#include <cstdint>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/test_files.h"

namespace tpserve {
namespace {

using ::testing::HasSubstr;

const std::string kDataDir = TPSERVE_TEST_DATA_DIR;
const std::string kModelPath = kDataDir + "/tiny-mistral/tokenizer.model";

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids;  // with BOS
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::vector<GoldenCase>& Golden() {
  static const std::vector<GoldenCase>* cases = [] {
    auto* out = new std::vector<GoldenCase>;
    const nlohmann::json j = nlohmann::json::parse(ReadFile(kDataDir + "/tokenizer_golden.json"));
    for (const auto& c : j.at("cases")) {
      out->push_back({c.at("text").get<std::string>(), c.at("ids").get<std::vector<int32_t>>()});
    }
    return out;
  }();
  return *cases;
}

std::unique_ptr<Tokenizer> LoadOrDie(const std::string& path = kModelPath) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadSentencePiece(path);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(t).value() : nullptr;
}

// Strict UTF-8 check (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    size_t len;
    uint32_t cp;
    if (b0 < 0x80) {
      ++i;
      continue;
    } else if ((b0 & 0xE0) == 0xC0) {
      len = 2, cp = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3, cp = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4, cp = b0 & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

TEST(IsValidUtf8Test, TheTestsValidatorRejectsBrokenSequences) {
  EXPECT_TRUE(IsValidUtf8("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98"));      // truncated emoji
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));          // overlong NUL
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
}

// Everything the detokenizer emits for `generated` after `prompt`, checking each piece.
std::string StreamAll(const Tokenizer& tok, const std::vector<int32_t>& prompt,
                      const std::vector<int32_t>& generated, std::vector<std::string>* pieces) {
  IncrementalDetokenizer detok(tok, prompt);
  std::string out;
  for (int32_t id : generated) {
    std::string piece = detok.Push(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << "Push(" << id << ") gave invalid UTF-8";
    if (pieces != nullptr) pieces->push_back(piece);
    out += piece;
  }
  std::string rest = detok.Flush();
  EXPECT_TRUE(IsValidUtf8(rest));
  if (pieces != nullptr) pieces->push_back(rest);
  return out + rest;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(TokenizerTest, LoadsTheTinyModelWithLlamaSpecialIds) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 301);  // tiny-mistral/config.json says 301
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->Encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(tok->Encode("", false).empty());
}

TEST(TokenizerTest, EncodeMatchesHuggingFaceOnEveryGoldenString) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  ASSERT_GE(Golden().size(), 1000u);
  int mismatches = 0;
  for (const GoldenCase& c : Golden()) {
    const std::vector<int32_t> ids = tok->Encode(c.text, /*add_bos=*/true);
    if (ids != c.ids) {
      if (++mismatches <= 10) ADD_FAILURE() << "text " << ::testing::PrintToString(c.text);
      continue;
    }
    // Without BOS it is the same ids minus the first; never an EOS at the end.
    EXPECT_EQ(Concat({tok->bos_id()}, tok->Encode(c.text, false)), ids);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size());
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(TokenizerTest, TinyLlamaShipsTheSameModel) {
  auto llama = LoadOrDie(kDataDir + "/tiny-llama/tokenizer.model");
  ASSERT_NE(llama, nullptr);
  EXPECT_EQ(llama->vocab_size(), 301);
  for (const GoldenCase& c : Golden()) EXPECT_EQ(llama->Encode(c.text, true), c.ids);
}

// SentencePiece maps spaces to U+2581 before encoding, so a literal U+2581 in the text comes
// back as a space; every other string round-trips exactly, leading whitespace included
// (HF's slow decode drops one more leading space: " a" -> "a"; we do not).
TEST(TokenizerTest, DecodeOfEncodeGivesBackEveryGoldenString) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  const std::string kLowerBlock = "\xE2\x96\x81";  // U+2581
  int with_lower_block = 0;
  for (const GoldenCase& c : Golden()) {
    std::string expected = c.text;
    for (size_t pos; (pos = expected.find(kLowerBlock)) != std::string::npos;) {
      expected.replace(pos, kLowerBlock.size(), " ");
      ++with_lower_block;
    }
    EXPECT_EQ(tok->Decode(c.ids), expected) << ::testing::PrintToString(c.text);
    EXPECT_EQ(tok->Decode(tok->Encode(c.text, false)), expected);
    EXPECT_EQ(tok->Decode(Concat(c.ids, {tok->eos_id()})), expected);  // EOS renders as nothing
  }
  EXPECT_GT(with_lower_block, 0);  // the golden set does exercise that rule
}

TEST(TokenizerTest, SpecialTokenTextIsEncodedAsPlainText) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->Encode("<s>hi</s><unk>", false);
  for (int32_t id : ids) {
    EXPECT_NE(id, tok->bos_id());
    EXPECT_NE(id, tok->eos_id());
    EXPECT_NE(id, 0);
  }
  EXPECT_EQ(tok->Decode(ids), "<s>hi</s><unk>");
}

TEST(TokenizerTest, NulRoundTripsAndInvalidUtf8BecomesReplacementCharacters) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  const std::string with_nul("a\0b", 3);
  EXPECT_EQ(tok->Decode(tok->Encode(with_nul, true)), with_nul);
  EXPECT_EQ(tok->Decode(tok->Encode("x\xFF\xE2\x82y", true)),
            "x\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDy");
}

TEST(TokenizerTest, DecodeRendersControlAndOutOfRangeIdsAsNothing) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> hello = tok->Encode("hello", false);
  EXPECT_EQ(tok->Decode({-1, 301, 1 << 30, 1, 2}), "");
  EXPECT_EQ(tok->Decode(Concat({1, 12345, -7}, Concat(hello, {2, 999}))), "hello");
}

// A golden string with an emoji, checked piece by piece: the bytes are held until the last.
TEST(IncrementalDetokenizerTest, HoldsAnEmojiUntilItsLastByteToken) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->Encode("a😀b", false);
  // "▁a" (or "▁" "a"), then <0xF0> <0x9F> <0x98> <0x80>, then "b".
  ASSERT_GE(ids.size(), 6u);
  std::vector<std::string> pieces;
  EXPECT_EQ(StreamAll(*tok, {tok->bos_id()}, ids, &pieces), "a😀b");
  const size_t n = ids.size();
  EXPECT_EQ(pieces[n - 5], "");
  EXPECT_EQ(pieces[n - 4], "");
  EXPECT_EQ(pieces[n - 3], "");
  EXPECT_EQ(pieces[n - 2], "😀");
  EXPECT_EQ(pieces[n - 1], "b");
  EXPECT_EQ(pieces[n], "");  // Flush: nothing held
}

TEST(IncrementalDetokenizerTest, ReproducesDecodeTokenByTokenForEveryGoldenString) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  for (const GoldenCase& c : Golden()) {
    // The prompt is the BOS the golden ids start with; the rest is "generated".
    const std::vector<int32_t> generated(c.ids.begin() + 1, c.ids.end());
    EXPECT_EQ(StreamAll(*tok, {c.ids[0]}, generated, nullptr), tok->Decode(generated))
        << ::testing::PrintToString(c.text);
    EXPECT_EQ(StreamAll(*tok, {}, generated, nullptr), tok->Decode(generated));
  }
}

// One long stream (all golden strings back to back, ~25k ids) so the detokenizer's window
// moves and its buffer is trimmed many times.
TEST(IncrementalDetokenizerTest, ALongStreamReproducesDecode) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  std::vector<int32_t> generated;
  for (const GoldenCase& c : Golden())
    generated.insert(generated.end(), c.ids.begin() + 1, c.ids.end());
  ASSERT_GT(generated.size(), 10000u);
  EXPECT_EQ(StreamAll(*tok, {tok->bos_id()}, generated, nullptr), tok->Decode(generated));
}

// After a prompt with text the stream is the continuation of the prompt's decoded text, so
// the first token's space is kept, unlike Decode(generated) alone.
TEST(IncrementalDetokenizerTest, ContinuesAPromptWithTextKeepingTheLeadingSpace) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> prompt = tok->Encode("USER: hi 😀\nASSISTANT:", true);
  const std::vector<int32_t> answer = tok->Encode("Hello world", false);  // starts with "▁"
  EXPECT_EQ(StreamAll(*tok, prompt, answer, nullptr), " Hello world");
  EXPECT_EQ(tok->Decode(answer), "Hello world");

  for (size_t i = 0; i < Golden().size(); ++i) {
    const std::vector<int32_t>& p = Golden()[(i * 31 + 5) % Golden().size()].ids;
    const std::vector<int32_t> gen(Golden()[i].ids.begin() + 1, Golden()[i].ids.end());
    const std::string prompt_text = tok->Decode(p);
    const std::string full = tok->Decode(Concat(p, gen));
    ASSERT_EQ(full.compare(0, prompt_text.size(), prompt_text), 0);
    EXPECT_EQ(StreamAll(*tok, p, gen, nullptr), full.substr(prompt_text.size()))
        << ::testing::PrintToString(Golden()[i].text);
  }
}

TEST(IncrementalDetokenizerTest, FlushRendersAnUnfinishedCharacterAsDecodeDoes) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  std::vector<int32_t> emoji = tok->Encode("😀", false);  // "▁" + four byte tokens
  ASSERT_EQ(emoji.size(), 5u);
  emoji.pop_back();
  IncrementalDetokenizer detok(*tok, {tok->bos_id()});
  std::string out;
  for (int32_t id : emoji) out += detok.Push(id);
  EXPECT_EQ(out, "");
  const std::string rest = detok.Flush();
  EXPECT_EQ(rest, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // one U+FFFD per byte
  EXPECT_EQ(out + rest, tok->Decode(emoji));
  EXPECT_EQ(detok.Flush(), "");
}

TEST(IncrementalDetokenizerTest, APromptEndingInsideACharacterIsCompletedByTheStream) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->Encode("ok 😀", true);  // ... <0xF0><0x9F><0x98><0x80>
  ASSERT_GE(ids.size(), 4u);
  const std::vector<int32_t> prompt(ids.begin(), ids.end() - 2);
  const std::vector<int32_t> generated(ids.end() - 2, ids.end());
  EXPECT_EQ(StreamAll(*tok, prompt, generated, nullptr), "😀");
}

// Random ids: bytes that start, continue or break UTF-8 sequences, control and out-of-range
// ids, ordinary pieces. Whatever comes, the stream is valid UTF-8 and adds up to Decode.
TEST(IncrementalDetokenizerTest, RandomIdSequencesStreamToTheirDecode) {
  auto tok = LoadOrDie();
  ASSERT_NE(tok, nullptr);
  // Byte pieces are <0x00>..<0xFF> at ids 3..258 in this model.
  ASSERT_EQ(tok->Decode({3 + 0x41}), "A");
  std::mt19937 rng(7);
  auto byte_id = [](int b) { return 3 + b; };
  auto IsByteId = [](int32_t id) { return id >= 3 && id < 3 + 256; };
  auto random_id = [&]() -> int32_t {
    switch (rng() % 10) {
      case 0:
        return byte_id(0xC2 + rng() % 0x1E);  // 2-byte lead
      case 1:
        return byte_id(0xE0 + rng() % 0x10);  // 3-byte lead
      case 2:
        return byte_id(0xF0 + rng() % 0x08);  // 4-byte lead, some beyond U+10FFFF
      case 3:
      case 4:
        return byte_id(0x80 + rng() % 0x40);  // continuation
      case 5:
        return byte_id(rng() % 0x100);  // any byte
      case 6:
        return static_cast<int32_t>(rng() % 3);  // unk, BOS, EOS
      case 7:
        return (rng() % 2) ? -3 : 301 + static_cast<int32_t>(rng() % 100);
      default:
        return 259 + static_cast<int32_t>(rng() % 42);  // ordinary pieces, "▁" among them
    }
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<int32_t> prompt, generated;
    for (int i = rng() % 4; i > 0; --i) prompt.push_back(random_id());
    for (int i = 1 + rng() % 24; i > 0; --i) generated.push_back(random_id());
    const std::string full = tok->Decode(Concat(prompt, generated));
    const std::string streamed = StreamAll(*tok, prompt, generated, nullptr);
    // The stream continues Decode(prompt) when the prompt ends on a character boundary; when
    // it ends inside a character (up to 3 byte ids) those bytes are streamed with the rest.
    bool matched = false;
    for (size_t k = 0; k <= 3 && k <= prompt.size() && !matched; ++k) {
      if (k > 0 && !IsByteId(prompt[prompt.size() - k])) break;
      const std::string head = tok->Decode(std::vector<int32_t>(prompt.begin(), prompt.end() - k));
      matched = full.compare(0, head.size(), head) == 0 && streamed == full.substr(head.size());
    }
    ASSERT_TRUE(matched) << "trial " << trial << " prompt " << ::testing::PrintToString(prompt)
                         << " generated " << ::testing::PrintToString(generated) << " streamed "
                         << ::testing::PrintToString(streamed) << " decoded "
                         << ::testing::PrintToString(full);
  }
}

TEST(TokenizerLoadTest, MissingFileIsNotFound) {
  const std::string path = test::MakeTempDir() + "/no-such-tokenizer.model";
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadSentencePiece(path);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(path));
}

TEST(TokenizerLoadTest, GarbageEmptyTruncatedOrDirectoryIsInvalidArgumentNamingThePath) {
  const std::string dir = test::MakeTempDir();
  const std::string model = ReadFile(kModelPath);
  ASSERT_GT(model.size(), 1000u);
  std::string garbage;
  std::mt19937 rng(3);
  for (int i = 0; i < 4096; ++i) garbage.push_back(static_cast<char>(rng()));
  const std::vector<std::pair<std::string, std::string>> files = {
      {"garbage.model", garbage},
      {"text.model", "this is not a sentencepiece model\n"},
      {"empty.model", ""},
      {"truncated.model", model.substr(0, model.size() / 2)},
  };
  for (const auto& [name, bytes] : files) {
    const std::string path = dir + "/" + name;
    test::WriteFile(path, bytes);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadSentencePiece(path);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << name << ": " << t.status();
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(path));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadSentencePiece(dir);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(dir));
}

}  // namespace
}  // namespace tpserve
